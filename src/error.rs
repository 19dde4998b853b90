//! The one error type at the edge. Each variant maps to exactly one `(status, code)` pair of the
//! contract, and is written as `{"error":{"code","message"}}` over HTTP or as an `error` frame over
//! WebSocket. Internal details are logged, never sent.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An action's failure, as the client sees it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidUser(String),
    #[error("you cannot swipe on yourself")]
    SelfSwipe,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    #[error("{0}")]
    Unavailable(String),
}

/// `{"error":{"code":..,"message":..}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    code: &'a str,
    message: String,
}

impl ApiError {
    /// Every contract code, in the order of the variants.
    pub const CODES: [&'static str; 10] = [
        "bad_request",
        "invalid_user",
        "self_swipe",
        "unauthorized",
        "forbidden",
        "not_found",
        "conflict",
        "payload_too_large",
        "rate_limited",
        "unavailable",
    ];

    /// The contract's snake_case code.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidUser(_) => (StatusCode::BAD_REQUEST, "invalid_user"),
            ApiError::SelfSwipe => (StatusCode::BAD_REQUEST, "self_swipe"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }

    /// The server is shutting down or an actor is gone: nothing was changed.
    pub fn shutting_down() -> ApiError {
        ApiError::Unavailable("the server is shutting down; nothing was changed, retry on another node".into())
    }

    /// The error in another node's `{"error":{"code","message"}}` body (`fallback` when it has none).
    pub fn from_body(body: &serde_json::Value, fallback: &str) -> ApiError {
        let code = body["error"]["code"].as_str().unwrap_or("unavailable");
        let message = body["error"]["message"].as_str().unwrap_or(fallback).to_string();
        Self::from_code(code, message)
    }

    /// The error another node answered with (`code` and `message` of its body).
    fn from_code(code: &str, message: String) -> ApiError {
        match code {
            "bad_request" => ApiError::BadRequest(message),
            "invalid_user" => ApiError::InvalidUser(message),
            "self_swipe" => ApiError::SelfSwipe,
            "unauthorized" => ApiError::Unauthorized(message),
            "forbidden" => ApiError::Forbidden(message),
            "not_found" => ApiError::NotFound(message),
            "conflict" => ApiError::Conflict(message),
            "rate_limited" => ApiError::RateLimited(1),
            _ => ApiError::Unavailable(message),
        }
    }

    /// The JSON body, also used for WebSocket error frames.
    pub fn body_json(&self) -> String {
        let body = ErrorBody { error: ErrorInner { code: self.code(), message: self.to_string() } };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

/// Decodes a request body or frame that must be a JSON object into `T`.
pub fn decode_object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::BadRequest("the body must be a JSON object".into()));
    }
    serde_json::from_value(value).map_err(ApiError::from_decode)
}

impl ApiError {
    /// Classifies a body that parsed as JSON but does not fit: a bad user id is `invalid_user`
    /// (our id types name themselves in their errors), anything else `bad_request`.
    pub fn from_decode(e: serde_json::Error) -> ApiError {
        let message = e.to_string();
        if message.contains("invalid user id") {
            ApiError::InvalidUser(message)
        } else {
            ApiError::BadRequest(message)
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(_: actix::MailboxError) -> Self {
        ApiError::shutting_down()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        crate::metrics::count_error(self.code());
        let mut res = HttpResponse::build(self.status_code());
        res.content_type("application/json");
        match self {
            ApiError::RateLimited(secs) => {
                res.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            ApiError::Unavailable(_) => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        res.body(self.body_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_follow_the_contract() {
        assert_eq!(
            ApiError::SelfSwipe.body_json(),
            r#"{"error":{"code":"self_swipe","message":"you cannot swipe on yourself"}}"#
        );
        assert_eq!(ApiError::RateLimited(2).status_code(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(ApiError::PayloadTooLarge(10).code(), "payload_too_large");
    }

    #[test]
    fn codes_lists_every_variant() {
        let all = [
            ApiError::BadRequest(String::new()),
            ApiError::InvalidUser(String::new()),
            ApiError::SelfSwipe,
            ApiError::Unauthorized(String::new()),
            ApiError::Forbidden(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::Conflict(String::new()),
            ApiError::PayloadTooLarge(1),
            ApiError::RateLimited(1),
            ApiError::Unavailable(String::new()),
        ];
        assert_eq!(all.map(|e| e.code()), ApiError::CODES);
    }
}
