//! Webhooks: every decision the app's backend cares about arrives once per event id, signed,
//! even when the receiver fails the first attempts; actions never wait for the receiver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::common::{self, TestServer, TIMEOUT};

const SECRET: &str = "webhook-secret-for-tests";

/// What the receiver saw, per event id.
#[derive(Default)]
struct Seen {
    attempts: HashMap<String, u32>,
    delivered: HashMap<String, Vec<Value>>,
    bad_signatures: u32,
}

async fn receive(req: HttpRequest, body: web::Bytes, seen: web::Data<Arc<Mutex<Seen>>>) -> HttpResponse {
    let id = req.headers().get("x-matchd-event-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let signature = req.headers().get("x-matchd-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut seen = seen.lock().unwrap();
    if signature != matchd::webhook::signature(SECRET, &body) {
        seen.bad_signatures += 1;
        return HttpResponse::BadRequest().finish();
    }
    let attempts = seen.attempts.entry(id.clone()).or_default();
    *attempts += 1;
    // The first two attempts of every event fail.
    if *attempts <= 2 {
        return HttpResponse::InternalServerError().finish();
    }
    seen.delivered.entry(id).or_default().push(serde_json::from_slice(&body).unwrap());
    HttpResponse::NoContent().finish()
}

#[actix_rt::test]
async fn each_event_arrives_once_signed_after_the_receiver_fails_twice() {
    let _trace = common::trace_init();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let receiver = {
        let seen = seen.clone();
        HttpServer::new(move || {
            App::new().app_data(web::Data::new(seen.clone())).route("/hook", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap()
    };
    let port = receiver.addrs()[0].port();
    let receiver = receiver.run();
    let receiver_handle = receiver.handle();
    actix_rt::spawn(receiver);

    let mut config = common::config();
    config.limits.joins_per_minute = 100;
    config.webhooks.url = Some(format!("http://127.0.0.1:{port}/hook"));
    config.webhooks.secret = Some(SECRET.into());
    config.webhooks.initial_backoff_ms = 20;
    let server = TestServer::start(config).await;
    let api = server.api();

    let m = api.mutual_match("w1", "w2").await;
    let match_id = m["match_id"].as_str().unwrap().to_string();
    let t1 = api.token("w1").await;
    api.unmatch(&t1, &match_id).await.ok();
    let t3 = api.token("w3").await;
    let t4 = api.token("w4").await;
    api.post_json("/v1/queue", Some(&t3), &json!({})).await;
    let room = api.post_json("/v1/queue", Some(&t4), &json!({})).await.ok();
    let room_id = room["room"]["room_id"].as_str().unwrap().to_string();
    api.post_json(&format!("/v1/rooms/{room_id}/skip"), Some(&t3), &json!({"requeue": false})).await.ok();
    // A room the app's backend closes (server API): no member closed it.
    let (t5, t6) = (api.token("w5").await, api.token("w6").await);
    // (Its own pool: w4 was requeued into the default one.)
    api.post_json("/v1/queue", Some(&t5), &json!({"pool": "hooks"})).await;
    let room = api.post_json("/v1/queue", Some(&t6), &json!({"pool": "hooks"})).await.ok();
    let closed_id = room["room"]["room_id"].as_str().unwrap().to_string();
    let close = api.request(awc::http::Method::POST, &format!("/v1/server/rooms/{closed_id}/close"));
    api.send(close.insert_header(("X-Api-Key", "dev-api-key")), None).await.ok();

    let expected = [
        (format!("match.created:{match_id}"), "match.created"),
        (format!("match.ended:{match_id}"), "match.ended"),
        (format!("room.created:{room_id}"), "room.created"),
        (format!("room.closed:{room_id}"), "room.closed"),
        (format!("room.created:{closed_id}"), "room.created"),
        (format!("room.closed:{closed_id}"), "room.closed"),
    ];
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let done = {
            let seen = seen.lock().unwrap();
            expected.iter().all(|(id, _)| seen.delivered.contains_key(id))
        };
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "webhooks missing: {:?}", seen.lock().unwrap().attempts);
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    // Retries after the last success would show up as a second delivery.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    check(&seen.lock().unwrap(), &expected, &m);
    server.shutdown().await;
    receiver_handle.stop(false).await;
}

fn check(seen: &Seen, expected: &[(String, &str)], m: &Value) {
    assert_eq!(seen.bad_signatures, 0);
    assert_eq!(seen.delivered.len(), expected.len(), "unexpected events: {:?}", seen.delivered.keys());
    for (id, type_) in expected {
        let bodies = &seen.delivered[id];
        assert_eq!(bodies.len(), 1, "{id} delivered {} times", bodies.len());
        assert_eq!(seen.attempts[id], 3, "{id}");
        assert_eq!(bodies[0]["id"], id.as_str());
        assert_eq!(bodies[0]["type"], *type_);
    }
    assert_eq!(&seen.delivered[&expected[0].0][0]["data"]["match"], m);
    assert_eq!(seen.delivered[&expected[1].0][0]["data"]["by"], "w1");
    assert_eq!(seen.delivered[&expected[3].0][0]["data"]["reason"], "skipped");
    assert_eq!(seen.delivered[&expected[3].0][0]["data"]["by"], "w3");
    assert_eq!(seen.delivered[&expected[5].0][0]["data"]["reason"], "closed_by_server");
    assert_eq!(seen.delivered[&expected[5].0][0]["data"]["by"], Value::Null);
}
