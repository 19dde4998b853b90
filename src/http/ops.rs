//! Operations endpoints: liveness, readiness, metrics.

use actix_web::{web, HttpResponse};

use crate::metrics::METRICS;
use crate::node::Node;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: persistence reachable and cluster joined. In-memory single node: always ready.
pub async fn readyz(node: web::Data<Node>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ready",
        "node": &*node.node_id,
        "persistence": "memory",
    }))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(METRICS.render())
}
