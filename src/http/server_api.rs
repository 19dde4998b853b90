//! The server API (`/v1/server/*`): for the app's own backend, never for end users. Every request
//! carries `X-Api-Key` (`ServerKey`); a user's token is no key. Without a configured key (and not
//! in dev mode) the whole API answers 404. Handlers parse and call the matching `Node` action.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use super::body::{JsonBody, OptionalJsonBody};
use super::trace::RequestId;
use crate::error::ApiError;
use crate::node::Node;
use crate::protocol::server::{CloseRoomRequest, CloseRoomResponse, PublishRequest, PublishResponse, UserView};
use crate::protocol::{RoomId, UserId};

/// Header carrying the server API's key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Proof that a request comes from the app's backend: its `X-Api-Key` is the configured key
/// (compared in constant time). Put it first among a handler's arguments, so a request without
/// the key learns nothing about its body's validity.
pub struct ServerKey;

fn check_key(req: &HttpRequest) -> Result<ServerKey, ApiError> {
    let node = req
        .app_data::<web::Data<Node>>()
        .ok_or_else(|| ApiError::Unavailable("the server is not configured".into()))?;
    let Some(key) = &node.api_key else {
        return Err(ApiError::NotFound(format!("no route for {} {}", req.method(), req.path())));
    };
    match req.headers().get(API_KEY_HEADER) {
        None => Err(ApiError::Unauthorized("the server API needs the X-Api-Key header".into())),
        Some(given) if key.matches(given.as_bytes()) => Ok(ServerKey),
        Some(_) => Err(ApiError::Unauthorized("the X-Api-Key is not this server's key".into())),
    }
}

impl FromRequest for ServerKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check_key(req))
    }
}

/// Unknown paths under `/v1/server/`: 404 like any other, but only for callers with the key.
pub async fn not_found(req: HttpRequest, _key: ServerKey) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no route for {} {}", req.method(), req.path())))
}

/// `POST /v1/server/publish`.
pub async fn publish(
    node: web::Data<Node>,
    _key: ServerKey,
    body: JsonBody<PublishRequest>,
) -> Result<web::Json<PublishResponse>, ApiError> {
    let publication = body.0.validate().map_err(ApiError::BadRequest)?;
    node.server_publish(publication).await.map(web::Json)
}

/// `GET /v1/server/users/{user}`.
pub async fn user(
    node: web::Data<Node>,
    _key: ServerKey,
    path: web::Path<String>,
) -> Result<web::Json<UserView>, ApiError> {
    let user =
        UserId::parse(&path).map_err(|e| ApiError::InvalidUser(format!("invalid user id {:?}: {e}", path.as_str())))?;
    node.inspect_user(user).await.map(web::Json)
}

/// `POST /v1/server/rooms/{room_id}/close`.
pub async fn close_room(
    node: web::Data<Node>,
    _key: ServerKey,
    request_id: RequestId,
    path: web::Path<String>,
    body: OptionalJsonBody<CloseRoomRequest>,
) -> Result<web::Json<CloseRoomResponse>, ApiError> {
    let room_id = RoomId::parse(&path).map_err(|_| ApiError::NotFound(format!("no room {}", path.as_str())))?;
    let requeue = body.0.requeue.unwrap_or(false);
    node.close_room(room_id, requeue, request_id.0).await.map(web::Json)
}
