//! Operations endpoints: liveness, readiness, metrics.

use actix_web::{web, HttpResponse, ResponseError};

use crate::metrics::METRICS;
use crate::node::Node;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: persistence reachable and this node active (it holds the lease, or is a settled
/// cluster member); 503 otherwise. A standby (Redis reachable, another node holds the lease) says
/// so and names the active node: `{"status":"standby","active_node":...}`.
pub async fn readyz(node: web::Data<Node>) -> HttpResponse {
    let persistence = if node.config.redis.is_some() { "redis" } else { "memory" };
    let members = node.membership().map(|m| (m.members(), m.owned_slots()));
    match node.persistence_ready().await {
        Ok(()) => {
            let mut body = serde_json::json!({
                "status": "ready",
                "node": &*node.node_id,
                "persistence": persistence,
            });
            if let Some((members, owned)) = members {
                body["members"] = members.len().into();
                body["member_ids"] = members.iter().map(|m| m.id.to_string()).collect::<Vec<_>>().into();
                body["owned_slots"] = owned.into();
            }
            HttpResponse::Ok().json(body)
        }
        Err(crate::persist::StoreError::Fenced) if node.standby_of().is_some() => {
            let active = node.standby_of();
            let message = crate::persist::lease::standby_message(&node.node_id, active.as_deref());
            crate::metrics::count_error("unavailable");
            HttpResponse::ServiceUnavailable().insert_header(("Retry-After", "1")).json(serde_json::json!({
                "status": "standby",
                "node": &*node.node_id,
                "active_node": active,
                "persistence": persistence,
                "error": {"code": "unavailable", "message": message},
            }))
        }
        Err(_) if members.is_some() => crate::error::ApiError::Unavailable(format!(
            "node {} is not an active cluster member yet (or lapsed), or cannot reach Redis",
            node.node_id
        ))
        .error_response(),
        Err(_) => crate::error::ApiError::Unavailable(format!(
            "node {} cannot reach its persistence ({persistence})",
            node.node_id
        ))
        .error_response(),
    }
}

/// `GET /metrics`: Prometheus text format. `matchd_connected_users` is this node's, counted by its
/// user shards now (left out if they do not answer in time).
pub async fn metrics(node: web::Data<Node>) -> HttpResponse {
    let own = node.connected_users().await.map(crate::metrics::connected_users_family).unwrap_or_default();
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(METRICS.render_with(own))
}
