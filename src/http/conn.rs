//! Connections a stream session can end at once.
//!
//! actix-http keeps a connection open after a response whose request body was not read to its end
//! (it "lingers", discarding input, until the client closes or `client_disconnect_timeout` runs
//! out). A WebSocket's request body is the client's frames, which never end by themselves, so after
//! the closing handshake the server waited for the client to close the TCP connection, and a client
//! that waits for the server's TCP close (as RFC 6455 7.1.1 asks) waited the whole timeout.
//!
//! `ConnStream` wraps each accepted socket. Its `ConnHandle` (in the request's connection data)
//! lets the session that owns the connection end the read side: the HTTP layer then reads end of
//! input, writes what it still holds (the close frame) and shuts the socket down. The handle also
//! tells a session when the client closed its side, which an SSE response would otherwise notice
//! only at its next failed write.
//!
//! A connection lives on one worker thread (the dispatcher and its sessions share it), so the
//! shared state is `Rc` and `Cell`, not atomics.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

#[derive(Default)]
struct Shared {
    /// The session ended the read side: every read from now on reports end of input.
    ended: Cell<bool>,
    /// The client closed its side (a read returned end of input).
    peer_closed: Cell<bool>,
    /// The HTTP layer's waker from its last read that had to wait.
    reader: RefCell<Option<Waker>>,
    /// Woken once when the client closes its side (holds a permit if nobody waits yet).
    peer_gone: Notify,
}

/// An accepted TCP connection whose read side the application can end.
pub struct ConnStream {
    io: TcpStream,
    shared: Rc<Shared>,
}

/// The application's side of a `ConnStream`, put in every request's connection data.
#[derive(Clone)]
pub struct ConnHandle(Rc<Shared>);

impl ConnStream {
    pub fn new(io: TcpStream) -> Self {
        ConnStream { io, shared: Rc::default() }
    }

    pub fn handle(&self) -> ConnHandle {
        ConnHandle(self.shared.clone())
    }
}

impl ConnHandle {
    /// Ends the connection's read side: the HTTP layer finishes writing and closes the socket
    /// instead of waiting for the client. Call it once the connection's last response is final
    /// (a WebSocket session that has queued its close frame).
    pub fn end(&self) {
        self.0.ended.set(true);
        if let Some(waker) = self.0.reader.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Resolves when the client has closed its side of the connection. One waiter per connection.
    pub async fn peer_closed(&self) {
        if !self.0.peer_closed.get() {
            self.0.peer_gone.notified().await;
        }
    }
}

impl AsyncRead for ConnStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shared.ended.get() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() == before && buf.remaining() > 0 && !this.shared.peer_closed.replace(true) {
                    this.shared.peer_gone.notify_one();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let mut reader = this.shared.reader.borrow_mut();
                if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *reader = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            err => err,
        }
    }
}

impl AsyncWrite for ConnStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
