//! Extractors for the acting user. `AuthUser` reads only `Authorization: Bearer`; `StreamUser`
//! also accepts `?token=`, which browsers need for WebSocket and EventSource.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use crate::error::ApiError;
use crate::node::Node;
use crate::protocol::UserId;

/// The user an action is taken as (the token's `sub`).
#[derive(Debug, Clone)]
pub struct AuthUser(pub UserId);

/// The user a stream belongs to.
#[derive(Debug, Clone)]
pub struct StreamUser(pub UserId);

fn bearer(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(ApiError::Unauthorized("the Authorization header must be \"Bearer <token>\"".into())),
    }
}

fn query_token(req: &HttpRequest) -> Option<String> {
    web::Query::<crate::http::StreamQuery>::from_query(req.query_string()).ok().and_then(|q| q.0.token)
}

fn authenticate(req: &HttpRequest, allow_query: bool) -> Result<UserId, ApiError> {
    let node = req
        .app_data::<web::Data<Node>>()
        .ok_or_else(|| ApiError::Unavailable("the server is not configured".into()))?;
    let query = if allow_query { query_token(req) } else { None };
    let token = match (bearer(req)?, query.as_deref()) {
        (Some(t), _) => t,
        (None, Some(t)) => t,
        (None, None) => return Err(ApiError::Unauthorized("a bearer token is required".into())),
    };
    node.auth.verify(token)
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, false).map(AuthUser))
    }
}

impl FromRequest for StreamUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, true).map(StreamUser))
    }
}
