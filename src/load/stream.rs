//! Event streams as a browser tab holds them: a WebSocket (`GET /v1/ws`) or an SSE stream
//! (`GET /v1/events`), read by a task that records every event with the instant it arrived and
//! answers the server's pings. The scenario reads the records while the streams run and takes them
//! when it stops the streams.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use awc::error::WsProtocolError;
use awc::ws;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::LoadError;
use super::history::{Seen, StreamRecord, Transport};
use super::http::Http;
use super::target::Target;
use super::wire::{parse_frame, EventBody, Frame};
use crate::protocol::sse::SseParser;

/// How long a closing stream waits for the server's close handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Largest WebSocket frame accepted from the server.
const MAX_FRAME: usize = 1 << 20;

/// A running stream: its live record and its reader task.
pub struct StreamHandle {
    pub record: Rc<RefCell<StreamRecord>>,
    task: tokio::task::JoinHandle<()>,
}

impl StreamHandle {
    pub fn has_hello(&self) -> bool {
        self.record.borrow().hello.is_some()
    }

    pub fn is_lost(&self) -> bool {
        self.record.borrow().lost.is_some()
    }

    /// Ready (hello received) or dead: nothing more to wait for.
    pub fn settled(&self) -> bool {
        let r = self.record.borrow();
        r.hello.is_some() || r.lost.is_some()
    }
}

/// Applies one frame's text to a record.
fn on_text(record: &RefCell<StreamRecord>, text: &str, at: Instant) {
    let mut r = record.borrow_mut();
    match parse_frame(text) {
        Frame::Event { id, body: EventBody::Hello { .. } } => {
            if r.hello.is_some() {
                r.problems.push(format!("a second hello (id {id})"));
            } else {
                r.hello = Some((id, at));
            }
        }
        Frame::Event { id, body } => {
            if r.hello.is_none() {
                r.problems.push(format!("event {id} ({}) before hello", body.kind()));
            }
            r.events.push(Seen { id, body, at });
        }
        Frame::Reply { kind, text } => r.problems.push(format!("unexpected {kind} frame: {text}")),
        Frame::Malformed(why) => r.problems.push(why),
    }
}

/// Opens a WebSocket for `user` and starts reading it.
pub async fn open_ws(
    http: &Http,
    target: &Target,
    token: &str,
    record: StreamRecord,
    stop: watch::Receiver<bool>,
) -> Result<StreamHandle, LoadError> {
    let connect =
        http.streams().ws(format!("{}/v1/ws", target.ws)).bearer_auth(token).max_frame_size(MAX_FRAME).connect();
    let (_, framed) = tokio::time::timeout(http.timeout(), connect)
        .await
        .map_err(|_| LoadError::Transport("no upgrade within the request timeout".into()))?
        .map_err(|e| LoadError::Transport(format!("upgrade failed: {e}")))?;
    let record = Rc::new(RefCell::new(record));
    let task = actix_rt::spawn(read_ws(framed, record.clone(), stop));
    Ok(StreamHandle { record, task })
}

async fn read_ws<F>(mut framed: F, record: Rc<RefCell<StreamRecord>>, mut stop: watch::Receiver<bool>)
where
    F: futures_util::Stream<Item = Result<ws::Frame, WsProtocolError>>
        + futures_util::Sink<ws::Message, Error = WsProtocolError>
        + Unpin,
{
    loop {
        tokio::select! {
            frame = framed.next() => {
                let at = Instant::now();
                match frame {
                    Some(Ok(ws::Frame::Text(bytes))) => match std::str::from_utf8(&bytes) {
                        Ok(text) => on_text(&record, text, at),
                        Err(_) => record.borrow_mut().problems.push("text frame is not UTF-8".into()),
                    },
                    Some(Ok(ws::Frame::Ping(payload))) => {
                        if let Err(e) = framed.send(ws::Message::Pong(payload)).await {
                            record.borrow_mut().lost = Some(format!("pong failed: {e}"));
                            return;
                        }
                    }
                    Some(Ok(ws::Frame::Close(reason))) => {
                        record.borrow_mut().lost = Some(format!("server closed the socket: {reason:?}"));
                        let _ = tokio::time::timeout(CLOSE_WAIT, framed.send(ws::Message::Close(reason))).await;
                        return;
                    }
                    Some(Ok(ws::Frame::Binary(_))) => record.borrow_mut().problems.push("binary frame".into()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        record.borrow_mut().lost = Some(format!("protocol error: {e}"));
                        return;
                    }
                    None => {
                        record.borrow_mut().lost = Some("the server ended the connection".into());
                        return;
                    }
                }
            }
            _ = stop.changed() => {
                let close = ws::Message::Close(Some(ws::CloseCode::Normal.into()));
                let _ = tokio::time::timeout(CLOSE_WAIT, async {
                    framed.send(close).await?;
                    // Read until the server's close answer, so its session ends cleanly.
                    while let Some(frame) = framed.next().await {
                        if matches!(frame?, ws::Frame::Close(_)) {
                            break;
                        }
                    }
                    Ok::<(), WsProtocolError>(())
                })
                .await;
                return;
            }
        }
    }
}

/// Opens an SSE stream for `user` and starts reading it.
pub async fn open_sse(
    http: &Http,
    target: &Target,
    token: &str,
    record: StreamRecord,
    stop: watch::Receiver<bool>,
) -> Result<StreamHandle, LoadError> {
    let req = http
        .streams()
        .get(format!("{}/v1/events", target.http))
        .bearer_auth(token)
        .insert_header(("Accept", "text/event-stream"));
    let res = tokio::time::timeout(http.timeout(), req.send())
        .await
        .map_err(|_| LoadError::Transport("no answer within the request timeout".into()))?
        .map_err(|e| LoadError::Transport(format!("request failed: {e}")))?;
    if res.status().as_u16() != 200 {
        return Err(LoadError::Transport(format!("answered {}", res.status().as_u16())));
    }
    let record = Rc::new(RefCell::new(record));
    let task = actix_rt::spawn(read_sse(res, record.clone(), stop));
    Ok(StreamHandle { record, task })
}

async fn read_sse<S>(
    mut body: awc::ClientResponse<S>,
    record: Rc<RefCell<StreamRecord>>,
    mut stop: watch::Receiver<bool>,
) where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut parser = SseParser::default();
    loop {
        tokio::select! {
            chunk = body.next() => {
                let at = Instant::now();
                match chunk {
                    Some(Ok(bytes)) => {
                        for msg in parser.feed(&bytes) {
                            on_text(&record, &msg.data, at);
                            let mut r = record.borrow_mut();
                            if let Some(e) = r.events.last().filter(|e| e.at == at) {
                                let (id, kind) = (e.id, e.body.kind().to_string());
                                if msg.id.as_deref() != Some(id.to_string().as_str()) || msg.event.as_deref() != Some(kind.as_str()) {
                                    r.problems.push(format!("SSE id/event {:?}/{:?} differ from the data's {id}/{kind}", msg.id, msg.event));
                                }
                            }
                        }
                    }
                    Some(Err(e)) => {
                        record.borrow_mut().lost = Some(format!("stream error: {e}"));
                        return;
                    }
                    None => {
                        record.borrow_mut().lost = Some("the server ended the stream".into());
                        return;
                    }
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Opens one stream of the given transport.
pub async fn open(
    http: &Http,
    target: &Target,
    token: &str,
    record: StreamRecord,
    stop: watch::Receiver<bool>,
) -> Result<StreamHandle, LoadError> {
    match record.transport {
        Transport::Ws => open_ws(http, target, token, record, stop).await,
        Transport::Sse => open_sse(http, target, token, record, stop).await,
    }
}

/// Stops every stream (after `stop` was sent) and takes their records.
pub async fn finish(handles: Vec<StreamHandle>) -> Vec<StreamRecord> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        // Each reader ends within CLOSE_WAIT of the stop signal; a stuck one is abandoned.
        let _ = tokio::time::timeout(CLOSE_WAIT * 2, h.task).await;
        out.push(std::mem::take(&mut *h.record.borrow_mut()));
    }
    out
}
