//! `WsSession`: one actor per WebSocket (the only module that uses actix-web-actors, which is
//! deprecated upstream; moving to actix-ws stays local to this file). It owns the connection:
//! heartbeats, the outbox (its mailbox), the resume point, and the actions a client sends.
//!
//! The response body only pulls from the actor while the socket can take more bytes, so a client
//! that stops reading stops the actor, its mailbox fills, and the user shard closes it as a slow
//! consumer instead of buffering without bound.

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, ContextFutureSpawner, Handler, StreamHandler, WrapFuture,
};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde::Serialize;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::http::conn::ConnHandle;
use crate::metrics::METRICS;
use crate::node::{Node, Subscription, Via};
use crate::protocol::ws::{Ack, ClientAction, ClientFrame, ErrorData, ErrorFrame};
use crate::protocol::{Event, UserId};
use crate::session::{Deliver, SessionHandle};

/// WebSocket close code when the user already has too many connections (do not retry at once).
pub const CLOSE_TOO_MANY_CONNECTIONS: u16 = 4009;

pub struct WsSession {
    node: Node,
    user: UserId,
    id: u64,
    /// Resume point the client asked for (`?since=`).
    since: Option<u64>,
    /// Last time the client showed it is alive (any frame, including pong).
    last_seen: Instant,
    /// Registered with the user's owner (so `stopped` must unsubscribe).
    subscription: Option<Subscription>,
    /// Ends the TCP connection once the session stops (after its close frame), instead of waiting
    /// for the client to close it.
    conn: Option<ConnHandle>,
}

impl WsSession {
    pub fn new(node: Node, user: UserId, since: Option<u64>, conn: Option<ConnHandle>) -> Self {
        let id = node.next_session_id();
        WsSession { node, user, id, since, last_seen: Instant::now(), subscription: None, conn }
    }

    fn write_event(&self, ctx: &mut ws::WebsocketContext<Self>, event: &Event) {
        // Event JSON is produced by serde_json, so it is valid UTF-8.
        match std::str::from_utf8(&event.json) {
            Ok(text) => ctx.text(text.to_owned()),
            Err(_) => tracing::error!(event_id = event.id, "event is not UTF-8; dropped"),
        }
        crate::metrics::delivered(event, "ws");
    }

    fn write_json<T: Serialize>(ctx: &mut ws::WebsocketContext<Self>, value: &T) {
        match serde_json::to_string(value) {
            Ok(text) => ctx.text(text),
            Err(e) => tracing::error!(error = %e, "reply could not be encoded"),
        }
    }

    fn write_error(ctx: &mut ws::WebsocketContext<Self>, err: &ApiError, ref_: Option<&serde_json::Value>) {
        crate::metrics::count_error(err.code());
        let message = err.to_string();
        Self::write_json(
            ctx,
            &ErrorFrame { type_: "error", ref_, data: ErrorData { code: err.code(), message: &message, ref_ } },
        );
    }

    fn heartbeat(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let timeout = self.node.config.client_timeout();
        ctx.run_interval(self.node.config.heartbeat_interval(), move |act, ctx| {
            if act.last_seen.elapsed() > timeout {
                tracing::debug!(user = %act.user, session = act.id, "websocket heartbeat timed out");
                // 1001: this end is going away; a client that is still there reconnects and resumes.
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Away,
                    description: Some("no frame or pong within the client timeout".into()),
                }));
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    /// Handles one text frame: an action, answered by `ack` or `error` with the client's `ref`.
    fn handle_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return Self::write_error(ctx, &ApiError::BadRequest(format!("frame is not JSON: {e}")), None),
        };
        let ref_ = value.get("ref").cloned();
        let frame: ClientFrame = match crate::error::decode_object(value) {
            Ok(f) => f,
            Err(e) => return Self::write_error(ctx, &e, ref_.as_ref()),
        };
        let node = self.node.clone();
        let user = self.user.clone();
        let request_id = node.next_request_id();
        match frame.action {
            ClientAction::Ping => Self::write_json(ctx, &serde_json::json!({"type": "pong", "ref": ref_, "data": {}})),
            ClientAction::Swipe(req) => {
                let fut = async move { node.swipe(&user, req, request_id, Via::Ws).await };
                self.reply_when_done(fut, ref_, ctx);
            }
            ClientAction::Unmatch { match_id } => {
                let fut = async move { node.unmatch(&user, match_id, request_id, Via::Ws).await };
                self.reply_when_done(fut, ref_, ctx);
            }
            ClientAction::JoinQueue(ticket) => {
                let fut = async move { node.join_queue(&user, ticket, Via::Ws).await };
                self.reply_when_done(fut, ref_, ctx);
            }
            ClientAction::LeaveQueue => {
                let fut = async move { node.leave_queue(&user, Via::Ws).await };
                self.reply_when_done(fut, ref_, ctx);
            }
            ClientAction::Skip { room_id, requeue } => {
                let requeue = requeue.unwrap_or(true);
                let fut = async move { node.skip(&user, room_id, requeue, request_id, Via::Ws).await };
                self.reply_when_done(fut, ref_, ctx);
            }
        }
    }

    fn reply_when_done<T, F>(&self, fut: F, ref_: Option<serde_json::Value>, ctx: &mut ws::WebsocketContext<Self>)
    where
        T: Serialize + 'static,
        F: std::future::Future<Output = Result<T, ApiError>> + 'static,
    {
        fut.into_actor(self)
            .map(move |res, _act: &mut WsSession, ctx| match res {
                Ok(data) => Self::write_json(ctx, &Ack { type_: "ack", ref_: &ref_, data }),
                Err(e) => Self::write_error(ctx, &e, ref_.as_ref()),
            })
            .spawn(ctx);
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.node.config.limits.outbox_capacity);
        METRICS.connections.with_label_values(&["ws"]).inc();
        self.heartbeat(ctx);
        let session = SessionHandle::new(self.id, ctx.address().recipient());
        let (node, user, since) = (self.node.clone(), self.user.clone(), self.since);
        // Registration is the one place the session waits: nothing else should run before it.
        async move { node.subscribe(&user, session, since).await }
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok(subscription) => act.subscription = Some(subscription),
                Err(e @ ApiError::Unavailable(_)) => {
                    ctx.close(Some(ws::CloseReason { code: ws::CloseCode::Restart, description: Some(e.to_string()) }));
                    ctx.stop();
                }
                Err(e) => {
                    Self::write_error(ctx, &e, None);
                    ctx.close(Some(ws::CloseReason {
                        code: ws::CloseCode::Other(CLOSE_TOO_MANY_CONNECTIONS),
                        description: Some(e.to_string()),
                    }));
                    ctx.stop();
                }
            })
            .wait(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Whatever stopped the session (either side's close, a protocol error, the heartbeat), its
        // last frame is queued: the connection closes as soon as that is written.
        if let Some(conn) = self.conn.take() {
            conn.end();
        }
        METRICS.connections.with_label_values(&["ws"]).dec();
        if let Some(subscription) = self.subscription.take() {
            self.node.unsubscribe(&self.user, self.id, subscription);
        }
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        match msg {
            Deliver::Resume { hello, missed } => {
                self.write_event(ctx, &hello);
                for e in &missed {
                    self.write_event(ctx, e);
                }
            }
            Deliver::Event(e) => self.write_event(ctx, &e),
            Deliver::Close(reason) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Other(reason.ws_code()),
                    description: Some(reason.as_str().into()),
                }));
                ctx.stop();
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => self.handle_text(&text, ctx),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) => {}
            Ok(ws::Message::Binary(_)) => Self::write_error(
                ctx,
                &ApiError::BadRequest("binary frames are not supported; send JSON text".into()),
                None,
            ),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Continuation(_)) | Ok(ws::Message::Nop) => {}
            Err(e) => {
                let code = match e {
                    ws::ProtocolError::Overflow => ws::CloseCode::Size,
                    _ => ws::CloseCode::Protocol,
                };
                tracing::debug!(user = %self.user, error = %e, "websocket protocol error");
                ctx.close(Some(ws::CloseReason { code, description: Some(e.to_string()) }));
                ctx.stop();
            }
        }
    }
}

/// `GET /v1/ws`: upgrade, then the session registers itself and replays from `?since=`.
pub async fn upgrade(
    req: HttpRequest,
    stream: web::Payload,
    node: web::Data<Node>,
    user: crate::http::auth::StreamUser,
    query: web::Query<crate::http::StreamQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    // A request that is not a valid upgrade gets the contract's error, not actix's empty 400.
    if let Err(e) = ws::handshake(&req) {
        return Err(ApiError::BadRequest(format!("GET /v1/ws must be a WebSocket upgrade: {e}")).into());
    }
    let node: Node = node.get_ref().clone();
    let frame_size = node.config.limits.max_frame_bytes;
    let conn = req.conn_data::<ConnHandle>().cloned();
    let session = WsSession::new(node, user.0, query.since, conn);
    ws::WsResponseBuilder::new(session, &req, stream).frame_size(frame_size).start()
}
