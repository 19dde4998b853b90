//! `SseSession`: one actor per Server-Sent Events stream. It writes into a bounded channel that
//! is the HTTP response body; a full channel means the client is not reading, so the stream is
//! closed (the client reconnects with `Last-Event-ID` and resumes).

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, ContextFutureSpawner, Handler, WrapFuture};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::stream;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::http::conn::ConnHandle;
use crate::metrics::METRICS;
use crate::node::{Node, Subscription};
use crate::protocol::{Event, UserId};
use crate::session::{Deliver, SessionHandle};

pub struct SseSession {
    node: Node,
    user: UserId,
    id: u64,
    /// The response body. Dropping it (when this actor stops) ends the HTTP response.
    body: mpsc::Sender<Bytes>,
    /// Set once registered with the user's owner (so `stopped` must unsubscribe).
    subscription: Option<Subscription>,
    /// Internal stream relayed by another node: each event carries its creation time.
    stamp: bool,
    /// The connection, to stop as soon as the client closes it (not at the next failed write).
    conn: Option<ConnHandle>,
}

/// The registration of a started session.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Attach(Subscription);

impl Handler<Attach> for SseSession {
    type Result = ();

    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) {
        self.subscription = Some(msg.0);
    }
}

impl SseSession {
    /// Queues bytes for the client; stops the session if the client is gone or not reading.
    fn push(&mut self, bytes: Bytes, ctx: &mut Context<Self>) -> bool {
        match self.body.try_send(bytes) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                METRICS.slow_consumers.inc();
                ctx.stop();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                ctx.stop();
                false
            }
        }
    }

    fn push_event(&mut self, event: &Event, ctx: &mut Context<Self>) {
        let bytes = if self.stamp {
            let stamp = format!(
                ": {}{}\n",
                crate::cluster::remote_stream::STAMP_FIELD,
                crate::cluster::remote_stream::created_micros(event)
            );
            Bytes::from([stamp.as_bytes(), &event.to_sse()].concat())
        } else {
            event.to_sse()
        };
        if self.push(bytes, ctx) {
            crate::metrics::delivered(event, "sse");
        }
    }
}

impl Actor for SseSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        METRICS.connections.with_label_values(&["sse"]).inc();
        let every = std::time::Duration::from_millis(self.node.config.timeouts.sse_keepalive_ms);
        ctx.run_interval(every, |act, ctx| {
            act.push(Bytes::from_static(b": keep-alive\n\n"), ctx);
        });
        // The HTTP layer drops the body when the client goes away: stop at once, freeing the
        // connection's place (per-user limit, presence) without waiting for a failed write.
        let body = self.body.clone();
        async move { body.closed().await }.into_actor(self).map(|_, _, ctx| ctx.stop()).spawn(ctx);
        // A client that closes the connection does not drop the body (the HTTP layer keeps a
        // half-closed connection's response going), so watch the socket too.
        if let Some(conn) = self.conn.clone() {
            async move { conn.peer_closed().await }.into_actor(self).map(|_, _, ctx| ctx.stop()).spawn(ctx);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        METRICS.connections.with_label_values(&["sse"]).dec();
        if let Some(subscription) = self.subscription.take() {
            self.node.unsubscribe(&self.user, self.id, subscription);
        }
    }
}

impl Handler<Deliver> for SseSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        match msg {
            Deliver::Resume { hello, missed } => {
                // One chunk, so a long replay does not count against the outbox.
                let mut buf = hello.to_sse().to_vec();
                for e in &missed {
                    buf.extend_from_slice(&e.to_sse());
                }
                if self.push(Bytes::from(buf), ctx) {
                    METRICS.events_delivered.inc_by(missed.len() as u64 + 1);
                }
            }
            Deliver::Event(e) => self.push_event(&e, ctx),
            Deliver::Close(_) => ctx.stop(),
        }
    }
}

/// The resume point of an SSE request: the `Last-Event-ID` header, else `?since=`.
fn resume_point(req: &HttpRequest, query_since: Option<u64>) -> Result<Option<u64>, ApiError> {
    match req.headers().get("last-event-id") {
        Some(v) => {
            let text = v.to_str().map_err(|_| ApiError::BadRequest("Last-Event-ID is not text".into()))?;
            if text.trim().is_empty() {
                return Ok(query_since);
            }
            text.trim()
                .parse()
                .map(Some)
                .map_err(|_| ApiError::BadRequest("Last-Event-ID must be an event id (an integer)".into()))
        }
        None => Ok(query_since),
    }
}

/// `GET /v1/events`.
pub async fn events(
    req: HttpRequest,
    node: web::Data<Node>,
    user: crate::http::auth::StreamUser,
    query: web::Query<crate::http::StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let since = resume_point(&req, query.since)?;
    open(&req, node.get_ref().clone(), user.0, since, false).await
}

/// Opens `user`'s stream as an SSE response; `stamp` marks internal streams relayed by another
/// node (see `cluster::remote_stream`).
pub async fn open(
    req: &HttpRequest,
    node: Node,
    user: UserId,
    since: Option<u64>,
    stamp: bool,
) -> Result<HttpResponse, ApiError> {
    let conn = req.conn_data::<ConnHandle>().cloned();
    let outbox = node.config.limits.outbox_capacity;
    let (tx, rx) = mpsc::channel::<Bytes>(outbox);
    let id = node.next_session_id();
    let session = SseSession::create({
        let (node, user) = (node.clone(), user.clone());
        move |ctx| {
            ctx.set_mailbox_capacity(outbox);
            SseSession { node, user, id, body: tx, subscription: None, stamp, conn }
        }
    });
    let handle = SessionHandle::new(id, session.clone().recipient());
    match node.subscribe(&user, handle, since).await {
        Ok(subscription) => {
            if let Err(actix::dev::SendError::Full(Attach(s)) | actix::dev::SendError::Closed(Attach(s))) =
                session.try_send(Attach(subscription))
            {
                node.unsubscribe(&user, id, s);
            }
        }
        Err(e) => {
            session.do_send(Deliver::Close(crate::session::CloseReason::ShuttingDown));
            return Err(e);
        }
    }
    let body =
        stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|bytes| (Ok::<Bytes, actix_web::Error>(bytes), rx)) },
        );
    // `Connection: close`: when the stream ends (the server closed it, or the client went away) the
    // TCP connection closes with it instead of idling for keep-alive; clients reconnect anyway.
    Ok(HttpResponse::Ok()
        .force_close()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}
