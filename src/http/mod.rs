//! The HTTP surface: the whole route table in `configure`, plus the extractor settings that make
//! malformed input answer with the contract's JSON errors instead of actix's plain-text defaults.

pub mod actions;
pub mod auth;
pub mod body;
pub mod conn;
pub mod cors;
pub mod dashboard;
pub mod demo;
pub mod internal;
pub mod ops;
pub mod server;
pub mod server_api;
pub mod trace;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{web, HttpRequest};
use serde::Deserialize;

use crate::error::ApiError;
use crate::node::Node;

/// Query string of the stream endpoints.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// Resume after this event id.
    pub since: Option<u64>,
    /// A token, for clients that cannot set headers (browsers' WebSocket and EventSource).
    pub token: Option<String>,
}

fn json_error(err: JsonPayloadError, _: &HttpRequest, limit: usize) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge(limit)
        }
        JsonPayloadError::ContentType => {
            ApiError::BadRequest("the body must be JSON with Content-Type: application/json".into())
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::BadRequest(e.to_string()),
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest(format!("the body is not valid JSON: {e}")),
        other => ApiError::BadRequest(other.to_string()),
    };
    api.into()
}

fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound(format!("no such resource: {err}")).into()
}

fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query string: {err}")).into()
}

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no route for {} {}", req.method(), req.path())))
}

/// Registers every route and extractor setting. `node` provides the limits.
pub fn configure(node: &Node) -> impl FnOnce(&mut web::ServiceConfig) + '_ {
    move |cfg: &mut web::ServiceConfig| {
        let limit = node.config.limits.max_body_bytes;
        cfg.app_data(web::JsonConfig::default().limit(limit).error_handler(move |e, r| json_error(e, r, limit)))
            .app_data(web::PayloadConfig::default().limit(limit))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .route("/", web::get().to(demo::page))
            .route("/matchd.js", web::get().to(demo::client_js))
            .route("/healthz", web::get().to(ops::healthz))
            .route("/readyz", web::get().to(ops::readyz))
            .route("/metrics", web::get().to(ops::metrics))
            .route("/dashboard", web::get().to(dashboard::page))
            .route("/dashboard/data", web::get().to(dashboard::data))
            .service(
                web::scope("/internal/v1")
                    // Batches between nodes are not bounded by the clients' body limit.
                    .app_data(web::PayloadConfig::default().limit(internal::MAX_BATCH_BYTES))
                    .route("/calls", web::post().to(internal::calls))
                    .route("/repairs", web::post().to(internal::repairs))
                    .route("/events", web::get().to(internal::events)),
            )
            .service(
                // Before "/v1": a scope answers for everything under its prefix.
                web::scope("/v1/server")
                    .route("/publish", web::post().to(server_api::publish))
                    .route("/users/{user}", web::get().to(server_api::user))
                    .route("/rooms/{room_id}/close", web::post().to(server_api::close_room))
                    .default_service(web::to(server_api::not_found)),
            )
            .service(
                web::scope("/v1")
                    .route("/swipes", web::post().to(actions::swipe))
                    .route("/matches", web::get().to(actions::list_matches))
                    .route("/matches/{match_id}", web::delete().to(actions::unmatch))
                    .route("/dev/token", web::post().to(actions::dev_token))
                    .route("/queue", web::post().to(actions::join_queue))
                    .route("/queue", web::delete().to(actions::leave_queue))
                    .route("/queue/{pool}", web::get().to(actions::pool_status))
                    .route("/rooms/{room_id}/skip", web::post().to(actions::skip))
                    .route("/ws", web::get().to(crate::transport::ws::upgrade))
                    .route("/events", web::get().to(crate::transport::sse::events)),
            )
            .default_service(web::to(not_found));
    }
}
