//! The developer demo page at `GET /` and the JavaScript client library it imports at
//! `GET /matchd.js`, both served in dev mode only and embedded in the binary. The page (`demo.html`,
//! inline CSS, no external assets) mints a dev token, keeps a stream open through `MatchdClient`
//! (`clients/js/matchd.js`: resume with `?since=` after a drop), and drives swipes, matches, spins,
//! rooms and skips over the public API, so a person can watch two users meet in two tabs.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use crate::node::Node;

/// The page, compiled in.
pub const PAGE: &str = include_str!("demo.html");

/// The client library (one ES module, no dependencies), compiled in.
pub const CLIENT_JS: &str = include_str!("../../clients/js/matchd.js");

fn dev_only(node: &Node, what: &str) -> Result<(), ApiError> {
    if node.config.dev_mode() {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("{what} is only served in dev mode (no --jwt-secret)")))
    }
}

/// `GET /`: the demo page; 404 `not_found` when a real secret is configured.
pub async fn page(node: web::Data<Node>) -> Result<HttpResponse, ApiError> {
    dev_only(&node, "the demo page")?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(PAGE))
}

/// `GET /matchd.js`: the client library, for the demo page's `import`; 404 `not_found` when a real
/// secret is configured.
pub async fn client_js(node: web::Data<Node>) -> Result<HttpResponse, ApiError> {
    dev_only(&node, "the client library")?;
    Ok(HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(CLIENT_JS))
}
