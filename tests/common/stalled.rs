//! A slow consumer: a WebSocket client with a small receive buffer that stops reading, while the
//! server keeps sending it large events until it closes the connection (4008).

use std::net::SocketAddr;

use matchd::load::raw_ws::RawWs;
use serde_json::json;

use super::Api;

/// A server configuration in which a stalled client fills its outbox quickly: a small outbox and
/// 60 KB room payloads (pool `big`), with joins and skips unthrottled.
pub fn config() -> matchd::Config {
    let mut config = super::config();
    config.limits.outbox_capacity = 8;
    config.limits.joins_per_minute = 100_000;
    config.limits.skips_per_minute = 100_000;
    config.pools =
        toml::from_str(&format!("[big]\nrematch_window_ms = 0\n[big.payload]\nblob = \"{}\"\n", "x".repeat(60_000)))
            .unwrap();
    config.limits.max_body_bytes = 1 << 20;
    config
}

async fn slow_consumers(api: &Api) -> f64 {
    let reply = api.send(api.request(awc::http::Method::GET, "/metrics"), None).await;
    std::str::from_utf8(&reply.body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("matchd_slow_consumers_closed_total "))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

/// Connects `user` without reading, then sends it a 60 KB `room_assigned`, a `room_closed` and a
/// `queue_update` per cycle (rooms with `<user>-partner`) until the server counts a slow consumer.
/// Leaves the user out of the queue. Returns the unread socket (its frames end with the close
/// frame) and the number of cycles.
pub async fn stall_until_closed(api: &Api, addr: SocketAddr, user: &str) -> (RawWs, usize) {
    let (slow, partner) = (api.token(user).await, api.token(&format!("{user}-partner")).await);
    let before = slow_consumers(api).await;
    let stalled = RawWs::connect(addr, &format!("/v1/ws?token={slow}"), Some(4096)).await.unwrap();
    let joined = api.post_json("/v1/queue", Some(&slow), &json!({"pool": "big"})).await.status;
    assert_eq!(joined.as_u16(), 202);
    let mut cycles = 0;
    while slow_consumers(api).await == before {
        cycles += 1;
        assert!(cycles <= 400, "the stalled connection was never closed");
        // The skip requeues the stalled user after it answers: wait until they are back in line.
        let mut waiting = 0;
        for _ in 0..1000 {
            waiting = api.get("/v1/queue/big", &partner).await.ok()["waiting"].as_u64().unwrap_or(0);
            if waiting == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert_eq!(waiting, 1, "the stalled user is not waiting in the pool");
        let room = api.post_json("/v1/queue", Some(&partner), &json!({"pool": "big"})).await;
        let room = room.ok();
        let room_id = room["room"]["room_id"].as_str().unwrap().to_string();
        api.post_json(&format!("/v1/rooms/{room_id}/skip"), Some(&partner), &json!({"requeue": false})).await.ok();
    }
    // The skips requeued the stalled user: take them out, so the pool is empty for the next one.
    api.delete("/v1/queue", &slow).await.ok();
    (stalled, cycles)
}
