//! A request id and a tracing span for every HTTP request. The id is answered in `X-Request-Id`,
//! passed with the action to its shard (which logs it with the decision), so one grep follows a
//! request from the edge to the decision and its batch.

use std::future::{ready, Ready};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use tracing::Instrument;

use crate::node::Node;

/// The id of the request being served.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub u64);

const HEADER: &str = "x-request-id";

/// Middleware: assigns the id, opens the span, answers the id.
pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req.app_data::<web::Data<Node>>().map(|n| n.next_request_id()).unwrap_or_default();
    // A caller's own id is logged beside ours (never trusted as ours: it is free text).
    let client_id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned);
    req.extensions_mut().insert(RequestId(id));
    let span = tracing::info_span!(
        "request",
        request_id = id,
        client_request_id = client_id.as_deref().unwrap_or(""),
        method = %req.method(),
        path = %req.path(),
    );
    let mut res = next.call(req).instrument(span.clone()).await?;
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        res.headers_mut().insert(HeaderName::from_static(HEADER), value);
    }
    span.in_scope(|| tracing::debug!(status = res.status().as_u16(), "answered"));
    Ok(res)
}

impl FromRequest for RequestId {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req.extensions().get::<RequestId>().copied().unwrap_or(RequestId(0));
        ready(Ok(id))
    }
}
