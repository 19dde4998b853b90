//! Handlers of the user actions. Each authenticates, parses, and calls the matching `Node` action
//! (shared with WebSocket), so this file holds no logic of its own.

use actix_web::{web, HttpResponse};

use super::auth::AuthUser;
use crate::error::ApiError;
use crate::node::{Node, Via};
use crate::protocol::{DevTokenRequest, DevTokenResponse, MatchId, MatchesResponse, SwipeRequest, SwipeResponse};

/// `POST /v1/swipes`.
pub async fn swipe(
    node: web::Data<Node>,
    user: AuthUser,
    body: web::Json<SwipeRequest>,
) -> Result<web::Json<SwipeResponse>, ApiError> {
    let request_id = node.next_request_id();
    node.swipe(&user.0, body.into_inner(), request_id, Via::Http).await.map(web::Json)
}

/// `GET /v1/matches`.
pub async fn list_matches(node: web::Data<Node>, user: AuthUser) -> Result<web::Json<MatchesResponse>, ApiError> {
    node.matches(&user.0).await.map(web::Json)
}

/// `DELETE /v1/matches/{match_id}`.
pub async fn unmatch(
    node: web::Data<Node>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let match_id = MatchId::parse(&path).map_err(|_| ApiError::NotFound(format!("no match {}", path.as_str())))?;
    let request_id = node.next_request_id();
    let res = node.unmatch(&user.0, match_id, request_id, Via::Http).await?;
    Ok(HttpResponse::Ok().json(res))
}

/// `POST /v1/dev/token`: dev mode only.
pub async fn dev_token(
    node: web::Data<Node>,
    body: web::Json<DevTokenRequest>,
) -> Result<web::Json<DevTokenResponse>, ApiError> {
    if !node.config.dev_mode() {
        return Err(ApiError::NotFound("dev tokens are only available in dev mode (no --jwt-secret)".into()));
    }
    let token = node.auth.mint(&body.user_id, crate::auth::DEV_TOKEN_TTL_SECS)?;
    Ok(web::Json(DevTokenResponse { token }))
}
