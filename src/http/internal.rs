//! Node-to-node endpoints (cluster mode): forwarded calls and relayed streams. Callers prove they
//! belong to the cluster with a key derived from the shared secret; a load balancer in front of
//! the cluster should not route `/internal/` at all. A call for a slot this node does not own is
//! refused with `x-matchd-not-owner` before anything runs, so the caller may retry elsewhere.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;

use crate::cluster::forward::{Call, CLUSTER_KEY_HEADER, NOT_OWNER_HEADER};
use crate::cluster::membership::Membership;
use crate::cluster::Route;
use crate::coord::slot::user_slot;
use crate::error::ApiError;
use crate::node::{execute_local, Node};
use crate::protocol::UserId;

/// The caller's key, checked in constant time.
fn authorized(req: &HttpRequest, node: &Node) -> Result<(), ApiError> {
    let Some(f) = &node.forwarder else {
        return Err(ApiError::NotFound("this node is not in a cluster".into()));
    };
    let given = req.headers().get(CLUSTER_KEY_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    let expected = f.key().as_bytes();
    let differs =
        given.len() != expected.len() || given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0;
    if differs {
        return Err(ApiError::Forbidden("internal endpoint: missing or wrong cluster key".into()));
    }
    Ok(())
}

fn not_owner(m: &Membership) -> HttpResponse {
    let mut res = Membership::not_active().error_response();
    res.headers_mut().insert(
        actix_web::http::header::HeaderName::from_static(NOT_OWNER_HEADER),
        actix_web::http::header::HeaderValue::from_static("1"),
    );
    tracing::debug!(node = m.node_id(), "refused a call for a slot this node does not own");
    res
}

/// `POST /internal/v1/call`.
pub async fn call(req: HttpRequest, node: web::Data<Node>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    authorized(&req, &node)?;
    let call: Call =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("bad internal call: {e}")))?;
    let Some(membership) = node.membership() else { return Err(ApiError::NotFound("not in a cluster".into())) };
    if !matches!(membership.route(call.slot()), Ok(Route::Local)) {
        return Ok(not_owner(membership));
    }
    let value = execute_local(&node.pairs, &node.users, &node.pools, node.config.action_timeout(), call).await?;
    Ok(HttpResponse::Ok().json(value))
}

#[derive(Debug, Deserialize)]
pub struct RelayQuery {
    user: UserId,
    since: Option<u64>,
}

/// `GET /internal/v1/events?user=&since=`: the user's stream, for a node that relays it.
pub async fn events(
    req: HttpRequest,
    node: web::Data<Node>,
    query: web::Query<RelayQuery>,
) -> Result<HttpResponse, ApiError> {
    authorized(&req, &node)?;
    let Some(membership) = node.membership() else { return Err(ApiError::NotFound("not in a cluster".into())) };
    if !matches!(membership.route(user_slot(&query.user)), Ok(Route::Local)) {
        return Ok(not_owner(membership));
    }
    let query = query.into_inner();
    crate::transport::sse::open(node.get_ref().clone(), query.user, query.since, true).await
}
