//! Node-to-node endpoints (cluster mode): forwarded calls and relayed streams. Callers prove they
//! belong to the cluster with a key derived from the shared secret; a load balancer in front of
//! the cluster should not route `/internal/` at all. A call for a slot this node does not own is
//! answered "not owner" before anything runs, so the caller may retry elsewhere.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::cluster::forward::{Call, CLUSTER_KEY_HEADER};
use crate::cluster::membership::Membership;
use crate::cluster::Route;
use crate::coord::slot::user_slot;
use crate::error::ApiError;
use crate::node::{execute_local, Node};
use crate::protocol::UserId;

/// Largest body of a call batch between nodes.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// The caller's key, checked in constant time.
fn authorized(req: &HttpRequest, node: &Node) -> Result<(), ApiError> {
    if node.forwarder.is_none() {
        return Err(ApiError::NotFound("this node is not in a cluster".into()));
    }
    key_matches(req, node)
}

fn key_matches(req: &HttpRequest, node: &Node) -> Result<(), ApiError> {
    let given = req.headers().get(CLUSTER_KEY_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    let expected = node.internal_key.as_bytes();
    let differs =
        given.len() != expected.len() || given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0;
    if differs {
        return Err(ApiError::Forbidden("internal endpoint: missing or wrong cluster key".into()));
    }
    Ok(())
}

/// `POST /internal/v1/calls`: a batch of calls from one node, run concurrently; one answer per
/// call, in order: `{"ok": value}`, `{"error": {"code", "message"}}`, or `{"not_owner": true}` for a
/// call this node did not run because it does not own its slot.
pub async fn calls(req: HttpRequest, node: web::Data<Node>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    authorized(&req, &node)?;
    let Some(membership) = node.membership() else { return Err(ApiError::NotFound("not in a cluster".into())) };
    let batch: Vec<Box<serde_json::value::RawValue>> =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("bad internal batch: {e}")))?;
    let timeout = node.config.action_timeout();
    let answers = futures_util::future::join_all(batch.iter().map(|raw| {
        let call = serde_json::from_str::<Call>(raw.get());
        let owned = call.as_ref().is_ok_and(|c| matches!(membership.route(c.slot()), Ok(Route::Local)));
        let node = node.clone();
        async move {
            match call {
                Err(e) => {
                    serde_json::json!({"error": {"code": "bad_request", "message": format!("bad internal call: {e}")}})
                }
                Ok(_) if !owned => serde_json::json!({"not_owner": true}),
                Ok(call) => match execute_local(&node.pairs, &node.users, &node.pools, timeout, call).await {
                    Ok(value) => serde_json::json!({ "ok": value }),
                    Err(e) => serde_json::json!({"error": {"code": e.code(), "message": e.to_string()}}),
                },
            }
        }
    }))
    .await;
    Ok(HttpResponse::Ok().json(answers))
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
        // The relaying node waits for the new owner and asks again.
        return Err(Membership::not_active());
    }
    let query = query.into_inner();
    crate::transport::sse::open(&req, node.get_ref().clone(), query.user, query.since, true).await
}

/// `POST /internal/v1/repairs`: audit repairs (`matchd audit --repair` with a node running), each
/// carried out by its owner (see `Node::repair`), concurrently; one `RepairOutcome` per repair, in
/// order. Answered by a node on Redis whether or not it is in a cluster (same key as the calls).
pub async fn repairs(req: HttpRequest, node: web::Data<Node>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    key_matches(&req, &node)?;
    if node.config.redis.is_none() {
        return Err(ApiError::NotFound("this node keeps its state in memory: there is nothing to repair".into()));
    }
    let repairs: Vec<crate::audit::Repair> =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("bad repair list: {e}")))?;
    let answers = futures_util::future::join_all(repairs.into_iter().map(|r| node.repair(r))).await;
    Ok(HttpResponse::Ok().json(answers))
}
