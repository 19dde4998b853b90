//! A stream opened on a node that does not own the user is fed from the owner: the node opens
//! the owner's internal SSE stream for the user (`GET /internal/v1/events`) and relays each event
//! to its local session, which writes it to the client as usual. The owner keeps the one log and
//! the presence of the user (the relay is one of the user's connections there), so resume, "told
//! once" and presence work the same whichever node the client reached. If the owner goes away the
//! relay closes the client's connection with "reconnect" (1012) and the client resumes from its
//! last event id through any node.

use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use bytes::Bytes;
use futures_util::StreamExt;

use super::forward::{Forwarder, CLUSTER_KEY_HEADER};
use super::ownership::Member;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::protocol::sse::SseMessage;
use crate::protocol::{Event, UserId};
use crate::session::{CloseReason, Deliver};

/// SSE comment (`: t=<unix µs>`) carrying an event's creation time on its owner, for the
/// cross-node delivery histogram.
pub const STAMP_FIELD: &str = "t=";

thread_local! {
    /// Streams live for hours: no overall timeout (the connect timeout still applies).
    /// One connection per relayed stream, so no cap on connections per peer (awc's default is 100).
    static STREAM_CLIENT: awc::Client =
        awc::Client::builder().connector(awc::Connector::new().limit(0)).disable_timeout().finish();
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// When `event` was created, in unix µs (for the stamp).
pub fn created_micros(event: &Event) -> u64 {
    unix_micros().saturating_sub(event.created.elapsed().as_micros() as u64)
}

/// How long a relay waits between tries to reach a user's new owner.
const REOPEN_PAUSE: Duration = Duration::from_millis(50);

/// An owner's internal stream, as bytes.
type Body = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>>>>;

/// Opens the owner's internal stream of `user` after `since`.
async fn connect(forwarder: &Forwarder, peer: &Member, user: &UserId, since: Option<u64>) -> Result<Body, ApiError> {
    let mut url = format!("{}/internal/v1/events?user={user}", peer.url);
    if let Some(since) = since {
        url.push_str(&format!("&since={since}"));
    }
    let request = STREAM_CLIENT.with(|c| c.get(url).insert_header((CLUSTER_KEY_HEADER, forwarder.key())));
    let send = tokio::time::timeout(Duration::from_secs(5), request.send());
    let mut res = match send.await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => {
            forwarder.membership().refresh_soon();
            return Err(ApiError::Unavailable(format!("the node owning this user is unreachable ({e}); reconnect")));
        }
        Err(_) => return Err(ApiError::Unavailable("the node owning this user did not answer; reconnect".into())),
    };
    if !res.status().is_success() {
        let body = res.body().limit(64 << 10).await.unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        return Err(ApiError::from_body(&value, "the owning node refused the stream"));
    }
    Ok(Box::pin(res))
}

/// Where the user's stream is to be found now, after its owner ended it: another node's
/// (`Some`), this node's own (`None`), or not known while the view is not settled (`Err`).
fn new_owner(forwarder: &Forwarder, user: &UserId) -> Result<Option<Member>, ()> {
    match forwarder.route(crate::coord::slot::user_slot(user)) {
        Ok(super::membership::Route::Remote(peer)) => Ok(Some(peer)),
        Ok(super::membership::Route::Local) => Ok(None),
        Err(_) => Err(()),
    }
}

/// What a relay needs to continue as a local subscription when its user's slot moves to this node.
pub struct Local {
    pub users: crate::session::UserRouter,
    pub session: crate::session::messages::SessionHandle,
}

/// Opens `user`'s stream on `peer` (the owner), resuming after `since`, and relays it to
/// `session` until the session ends. Fails like a local subscribe would (e.g. too many
/// connections) if the owner refuses. See `relay` for what happens when the owner changes.
pub async fn open(
    forwarder: &Forwarder,
    peer: &Member,
    user: &UserId,
    since: Option<u64>,
    local: Local,
) -> Result<tokio::task::JoinHandle<()>, ApiError> {
    let body = connect(forwarder, peer, user, since).await?;
    Ok(relay(forwarder.clone(), user.clone(), local, Some(body), None))
}

/// A stream this node served for a user it no longer owns: follows the user to the new owner,
/// after `since` (the last event the session was given), so the client keeps its connection.
pub fn follow(forwarder: Forwarder, user: UserId, since: u64, local: Local) -> tokio::task::JoinHandle<()> {
    relay(forwarder, user, local, None, Some(since))
}

/// Relays the owner's stream to the session. When the owner ends it (it stops, or the user's
/// slot moves), the relay follows the user: it opens the new owner's stream after the last event
/// it passed on (skipping that owner's `hello` and anything at or below that id), or continues as
/// a local subscription if the user came to this node; only when no owner takes the stream
/// within one call's budget is the client closed with 1012 (reconnect and resume).
fn relay(
    forwarder: Forwarder,
    user: UserId,
    local: Local,
    mut body: Option<Body>,
    mut last: Option<u64>,
) -> tokio::task::JoinHandle<()> {
    let session: Recipient<Deliver> = local.session.recipient.clone();
    METRICS.connections.with_label_values(&["relay"]).inc();
    let relay = forwarder.relay_started(session.clone());
    actix_rt::spawn(async move {
        let mut continued_here = false;
        'relay: loop {
            if let Some(mut res) = body.take() {
                let mut parser = crate::protocol::sse::SseParser::default();
                let mut hello_seen = false;
                while let Some(chunk) = res.next().await {
                    let Ok(chunk) = chunk else { break };
                    if !session.connected() {
                        break 'relay;
                    }
                    for (event, stamp) in parser.feed(&chunk).into_iter().filter_map(relayed_event) {
                        if let Some(created) = stamp {
                            let lag = unix_micros().saturating_sub(created);
                            METRICS.cross_node_delivery_seconds.observe(lag as f64 / 1e6);
                        }
                        let msg = match (last, hello_seen) {
                            (None, _) => {
                                hello_seen = true;
                                last = Some(event.id);
                                Deliver::Resume { hello: event, missed: Vec::new() }
                            }
                            // A new owner's `hello`: the client has had one already.
                            (Some(_), false) => {
                                hello_seen = true;
                                continue;
                            }
                            (Some(prev), true) if event.id <= prev => continue,
                            (Some(_), true) => {
                                last = Some(event.id);
                                Deliver::Event(Arc::new(event))
                            }
                        };
                        match session.try_send(msg) {
                            Ok(()) => {}
                            Err(actix::dev::SendError::Full(_)) => {
                                METRICS.slow_consumers.inc();
                                session.do_send(Deliver::Close(CloseReason::SlowConsumer));
                                break 'relay;
                            }
                            Err(actix::dev::SendError::Closed(_)) => break 'relay,
                        }
                    }
                }
            }
            // The owner ended the stream (or there was none yet): follow the user.
            let Some(since) = last else { break };
            let deadline = tokio::time::Instant::now() + forwarder.timeout();
            loop {
                if tokio::time::Instant::now() >= deadline || !session.connected() {
                    break 'relay;
                }
                match new_owner(&forwarder, &user) {
                    Ok(Some(peer)) => match connect(&forwarder, &peer, &user, Some(since)).await {
                        Ok(next) => {
                            METRICS.relay_reopens.inc();
                            body = Some(next);
                            continue 'relay;
                        }
                        Err(ApiError::Unavailable(_)) => {}
                        Err(_) => break 'relay,
                    },
                    // The user is this node's own now: continue as a local subscription.
                    Ok(None) => {
                        let msg = crate::session::messages::Subscribe {
                            user: user.clone(),
                            session: local.session.clone(),
                            since: Some(since),
                            continued: true,
                        };
                        match local.users.for_user(&user).send(msg).await {
                            Ok(Ok(())) => {
                                METRICS.relay_reopens.inc();
                                continued_here = true;
                                break 'relay;
                            }
                            Ok(Err(ApiError::Unavailable(_))) => {}
                            _ => break 'relay,
                        }
                    }
                    Err(()) => {}
                }
                forwarder.membership().refresh_soon();
                tokio::time::sleep(REOPEN_PAUSE).await;
            }
        }
        METRICS.connections.with_label_values(&["relay"]).dec();
        forwarder.relay_ended(relay);
        if !continued_here {
            // No owner took the stream: the client reconnects and resumes.
            session.do_send(Deliver::Close(CloseReason::ShuttingDown));
        }
    })
}

/// The event in one SSE message of the owner's stream, and its creation stamp (unix µs) if any.
fn relayed_event(msg: SseMessage) -> Option<(Event, Option<u64>)> {
    let type_name = Event::parse_type(msg.event.as_deref()?)?;
    let id = msg.id.as_deref()?.trim().parse().ok()?;
    let stamp = msg.comment.as_deref().and_then(|c| c.strip_prefix(STAMP_FIELD)).and_then(|v| v.trim().parse().ok());
    Some((Event::stored(id, type_name, Bytes::from(msg.data), None), stamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sse::SseParser;

    #[test]
    fn relayed_events_keep_id_type_body_and_stamp_and_keepalives_are_skipped() {
        let mut p = SseParser::default();
        assert!(p.feed(b": keep-alive\n\nid: 3\nevent: hel").is_empty());
        let got: Vec<_> = p
            .feed(b"lo\ndata: {\"id\":3,\"type\":\"hello\"}\n\n: t=17\nid: 4\nevent: match\ndata: {}\n\n")
            .into_iter()
            .filter_map(relayed_event)
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.id, got[0].0.type_name.as_ref(), got[0].1), (3, "hello", None));
        assert_eq!(&got[0].0.json[..], b"{\"id\":3,\"type\":\"hello\"}");
        assert_eq!((got[1].0.id, got[1].0.type_name.as_ref(), got[1].1), (4, "match", Some(17)));
        // Events the app's backend published relay like built-in ones; anything else is not an event.
        let got: Vec<_> = p
            .feed(b"id: 5\nevent: match_result\ndata: {}\n\nid: 6\nevent: Not An Event\ndata: {}\n\n")
            .into_iter()
            .filter_map(relayed_event)
            .collect();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0.id, got[0].0.type_name.as_ref()), (5, "match_result"));
    }
}
