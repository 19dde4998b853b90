//! Handlers of the user actions. Each authenticates, parses, and calls the matching `Node` action
//! (shared with WebSocket), so this file holds no logic of its own.

use actix_web::{web, HttpResponse};

use super::auth::AuthUser;
use super::body::{JsonBody, OptionalJsonBody};
use super::trace::RequestId;
use crate::error::ApiError;
use crate::node::{Node, Via};
use crate::protocol::{
    DevTokenRequest, DevTokenResponse, JoinRequest, JoinResponse, LeaveResponse, MatchId, MatchesResponse, PoolName,
    PoolStatus, RoomId, SkipRequest, SkipResponse, SwipeRequest, SwipeResponse,
};

/// `POST /v1/swipes`.
pub async fn swipe(
    node: web::Data<Node>,
    user: AuthUser,
    request_id: RequestId,
    body: JsonBody<SwipeRequest>,
) -> Result<web::Json<SwipeResponse>, ApiError> {
    node.swipe(&user.0, body.0, request_id.0, Via::Http).await.map(web::Json)
}

/// `GET /v1/matches`.
pub async fn list_matches(node: web::Data<Node>, user: AuthUser) -> Result<web::Json<MatchesResponse>, ApiError> {
    node.matches(&user.0).await.map(web::Json)
}

/// `DELETE /v1/matches/{match_id}`.
pub async fn unmatch(
    node: web::Data<Node>,
    user: AuthUser,
    request_id: RequestId,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let match_id = MatchId::parse(&path).map_err(|_| ApiError::NotFound(format!("no match {}", path.as_str())))?;
    let res = node.unmatch(&user.0, match_id, request_id.0, Via::Http).await?;
    Ok(HttpResponse::Ok().json(res))
}

/// `POST /v1/dev/token`: dev mode only.
pub async fn dev_token(
    node: web::Data<Node>,
    body: JsonBody<DevTokenRequest>,
) -> Result<web::Json<DevTokenResponse>, ApiError> {
    if !node.config.dev_mode() {
        return Err(ApiError::NotFound("dev tokens are only available in dev mode (no --jwt-secret)".into()));
    }
    let token = node.auth.mint(&body.0.user_id, crate::auth::DEV_TOKEN_TTL_SECS)?;
    Ok(web::Json(DevTokenResponse { token }))
}

/// `POST /v1/queue`: 202 when queued, 200 when paired at once.
pub async fn join_queue(
    node: web::Data<Node>,
    user: AuthUser,
    body: OptionalJsonBody<JoinRequest>,
) -> Result<HttpResponse, ApiError> {
    let res = node.join_queue(&user.0, body.0, Via::Http).await?;
    Ok(match &res {
        JoinResponse::Queued { .. } => HttpResponse::Accepted().json(res),
        JoinResponse::Matched { .. } => HttpResponse::Ok().json(res),
    })
}

/// `DELETE /v1/queue`.
pub async fn leave_queue(node: web::Data<Node>, user: AuthUser) -> Result<web::Json<LeaveResponse>, ApiError> {
    node.leave_queue(&user.0, Via::Http).await.map(web::Json)
}

/// `GET /v1/queue/{pool}`.
pub async fn pool_status(
    node: web::Data<Node>,
    _user: AuthUser,
    path: web::Path<String>,
) -> Result<web::Json<PoolStatus>, ApiError> {
    let pool = PoolName::parse(&path).map_err(|_| ApiError::NotFound(format!("no pool named {}", path.as_str())))?;
    node.pool_status(&pool).await.map(web::Json)
}

/// `POST /v1/rooms/{room_id}/skip`.
pub async fn skip(
    node: web::Data<Node>,
    user: AuthUser,
    request_id: RequestId,
    path: web::Path<String>,
    body: OptionalJsonBody<SkipRequest>,
) -> Result<web::Json<SkipResponse>, ApiError> {
    let room_id = RoomId::parse(&path).map_err(|_| ApiError::NotFound(format!("no room {}", path.as_str())))?;
    let requeue = body.0.requeue.unwrap_or(true);
    node.skip(&user.0, room_id, requeue, request_id.0, Via::Http).await.map(web::Json)
}
