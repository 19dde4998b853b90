//! Webhooks to the app's backend: `match.created`, `match.ended`, `room.created`, `room.closed`.
//! Shards hand events to the `WebhookDispatcher` (its own thread) and never wait for it. Each event
//! is POSTed as JSON with a stable `id` (the receiver de-duplicates on it), signed with
//! HMAC-SHA256, and retried with exponential backoff until a 2xx or `max_attempts`: at least once
//! while the node runs. With Redis, an event is handed over only after its decision is stored.

use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter, Context, Handler, Message};
use serde::Serialize;

use crate::config::Webhooks;
use crate::metrics::METRICS;
use crate::protocol::unix_ms;

/// One webhook event.
#[derive(Debug, Clone, Serialize, Message)]
#[rtype(result = "()")]
pub struct WebhookEvent {
    /// Stable across retries (and re-sends): the receiver's de-duplication key.
    pub id: String,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub created_at: u64,
    pub data: serde_json::Value,
}

impl WebhookEvent {
    pub fn new(id: String, type_: &'static str, data: serde_json::Value) -> Self {
        WebhookEvent { id, type_, created_at: unix_ms(), data }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body).
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Cloneable front door; a no-op when webhooks are off.
#[derive(Clone, Default)]
pub struct WebhookSender {
    addr: Option<Addr<WebhookDispatcher>>,
}

impl WebhookSender {
    /// Starts the dispatcher on its own thread when a URL is configured.
    pub fn start(config: &Webhooks) -> (WebhookSender, Option<Arbiter>) {
        let (Some(url), Some(secret)) = (config.url.clone(), config.secret.clone()) else {
            return (WebhookSender::default(), None);
        };
        let arbiter = Arbiter::new();
        let config = config.clone();
        let addr = WebhookDispatcher::start_in_arbiter(&arbiter.handle(), move |_| WebhookDispatcher {
            url: Rc::from(url.as_str()),
            secret: Rc::from(secret.as_str()),
            client: awc::Client::builder().timeout(Duration::from_millis(config.timeout_ms)).finish(),
            config,
            pending: Rc::new(std::cell::Cell::new(0)),
        });
        (WebhookSender { addr: Some(addr) }, Some(arbiter))
    }

    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// Hands `event` over without waiting.
    pub fn send(&self, event: WebhookEvent) {
        if let Some(addr) = &self.addr {
            addr.do_send(event);
        }
    }
}

pub struct WebhookDispatcher {
    url: Rc<str>,
    secret: Rc<str>,
    client: awc::Client,
    config: Webhooks,
    /// Events being delivered or waiting to retry.
    pending: Rc<std::cell::Cell<usize>>,
}

impl Actor for WebhookDispatcher {
    type Context = Context<Self>;
}

impl Handler<WebhookEvent> for WebhookDispatcher {
    type Result = ();

    fn handle(&mut self, event: WebhookEvent, _: &mut Context<Self>) {
        if self.pending.get() >= self.config.max_pending {
            METRICS.webhooks.with_label_values(&["dropped_overload"]).inc();
            tracing::warn!(id = %event.id, "webhook dropped: too many pending deliveries");
            return;
        }
        let body = match serde_json::to_vec(&event) {
            Ok(b) => bytes::Bytes::from(b),
            Err(_) => return,
        };
        let signature = signature(&self.secret, &body);
        let (client, url, config, pending) =
            (self.client.clone(), self.url.clone(), self.config.clone(), self.pending.clone());
        pending.set(pending.get() + 1);
        actix::spawn(async move {
            let mut delay = Duration::from_millis(config.initial_backoff_ms);
            for attempt in 1..=config.max_attempts {
                let sent = client
                    .post(&*url)
                    .insert_header(("content-type", "application/json"))
                    .insert_header(("x-matchd-event-id", event.id.as_str()))
                    .insert_header(("x-matchd-signature", signature.as_str()))
                    .insert_header(("x-matchd-attempt", attempt.to_string()))
                    .send_body(body.clone())
                    .await;
                match sent {
                    Ok(res) if res.status().is_success() => {
                        METRICS.webhooks.with_label_values(&["delivered"]).inc();
                        pending.set(pending.get() - 1);
                        return;
                    }
                    Ok(res) => {
                        tracing::debug!(id = %event.id, attempt, status = res.status().as_u16(), "webhook refused")
                    }
                    Err(e) => tracing::debug!(id = %event.id, attempt, error = %e, "webhook not delivered"),
                }
                METRICS.webhooks.with_label_values(&["retried"]).inc();
                actix_rt::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(config.max_backoff_ms));
            }
            METRICS.webhooks.with_label_values(&["gave_up"]).inc();
            tracing::warn!(id = %event.id, attempts = config.max_attempts, "webhook given up");
            pending.set(pending.get() - 1);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
