//! Operations endpoints: liveness, readiness, metrics.

use actix_web::{web, HttpResponse, ResponseError};

use crate::metrics::METRICS;
use crate::node::Node;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: persistence reachable (and, later, cluster joined); 503 otherwise.
pub async fn readyz(node: web::Data<Node>) -> HttpResponse {
    let persistence = if node.config.redis.is_some() { "redis" } else { "memory" };
    match node.persistence_ready().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({
            "status": "ready",
            "node": &*node.node_id,
            "persistence": persistence,
        })),
        Err(_) => crate::error::ApiError::Unavailable(format!(
            "node {} cannot reach its persistence ({persistence})",
            node.node_id
        ))
        .error_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(METRICS.render())
}
