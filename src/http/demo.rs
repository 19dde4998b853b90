//! The developer demo page at `GET /`, served in dev mode only: one self-contained HTML file
//! (`demo.html`, inline CSS and JS, no external assets) embedded in the binary. It mints a dev token,
//! keeps a WebSocket open (resuming with `?since=` after a drop), and drives swipes, matches, spins,
//! rooms and skips over the public HTTP API, so a person can watch two users meet in two tabs.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use crate::node::Node;

/// The page, compiled in.
pub const PAGE: &str = include_str!("demo.html");

/// `GET /`: the demo page; 404 `not_found` when a real secret is configured.
pub async fn page(node: web::Data<Node>) -> Result<HttpResponse, ApiError> {
    if !node.config.dev_mode() {
        return Err(ApiError::NotFound("the demo page is only served in dev mode (no --jwt-secret)".into()));
    }
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(PAGE))
}
