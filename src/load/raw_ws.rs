//! A minimal WebSocket client over a plain TCP socket, for what a full client library hides: when
//! exactly the server closes the TCP connection, a client that stops reading, a client that never
//! answers pings. It does the opening handshake, reads frames (unfragmented, as matchd sends them)
//! and sends masked frames; nothing is answered automatically.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The mask of every frame this client sends (the protocol requires one, not a secret one).
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x88];
/// Largest frame accepted from the server.
const MAX_FRAME: usize = 16 << 20;

/// One frame from the server.
#[derive(Debug, Clone)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The status code of a close frame, if it has one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OP_CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn text(&self) -> Option<&str> {
        (self.opcode == OP_TEXT).then(|| std::str::from_utf8(&self.payload).ok()).flatten()
    }
}

pub struct RawWs {
    stream: TcpStream,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl RawWs {
    /// Connects to `addr` (`host:port`) and upgrades `path` (with its query). `recv_buffer` sets a
    /// small socket receive buffer, for a client that should stall the server quickly.
    pub async fn connect(addr: std::net::SocketAddr, path: &str, recv_buffer: Option<u32>) -> io::Result<RawWs> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let mut stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut ws = RawWs { stream, buf: Vec::with_capacity(1024) };
        let head = loop {
            if let Some(end) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = ws.buf.drain(..end + 4).collect();
                break head;
            }
            if ws.buf.len() > 16 * 1024 || ws.fill().await? == 0 {
                return Err(invalid("the server closed or sent no complete response head"));
            }
        };
        if !head.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&head);
            return Err(invalid(format!("upgrade refused: {}", line.lines().next().unwrap_or_default())));
        }
        Ok(ws)
    }

    /// Reads more bytes into the buffer; 0 = end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Makes sure `n` bytes are buffered; false if the stream ended first.
    async fn need(&mut self, n: usize) -> io::Result<bool> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The next frame; `None` when the server closed the connection.
    pub async fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        if !self.need(2).await? {
            return Ok(None);
        }
        let (opcode, short) = (self.buf[0] & 0x0f, (self.buf[1] & 0x7f) as usize);
        let (head, len) = match short {
            126 => {
                if !self.need(4).await? {
                    return Ok(None);
                }
                (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
            }
            127 => {
                if !self.need(10).await? {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (10, u64::from_be_bytes(b) as usize)
            }
            n => (2, n),
        };
        if len > MAX_FRAME {
            return Err(invalid(format!("frame of {len} bytes")));
        }
        if !self.need(head + len).await? {
            return Ok(None);
        }
        let payload = self.buf[head..head + len].to_vec();
        self.buf.drain(..head + len);
        Ok(Some(Frame { opcode, payload }))
    }

    /// Reads frames until a text frame whose JSON `type` is `kind`; `None` if the stream ended.
    pub async fn until_event(&mut self, kind: &str) -> io::Result<Option<serde_json::Value>> {
        while let Some(frame) = self.read_frame().await? {
            if let Some(value) = frame.text().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()) {
                if value["type"] == kind {
                    return Ok(Some(value));
                }
            }
        }
        Ok(None)
    }

    /// Reads frames until the server's close frame: `Some(code)` (0 if it had none), or `None`
    /// if the connection ended without one.
    pub async fn until_close(&mut self) -> io::Result<Option<u16>> {
        while let Some(frame) = self.read_frame().await? {
            if frame.opcode == OP_CLOSE {
                return Ok(Some(frame.close_code().unwrap_or(0)));
            }
        }
        Ok(None)
    }

    /// Reads (and discards) until the server closes the TCP connection. A reset counts as closed.
    pub async fn until_eof(&mut self) -> io::Result<()> {
        self.buf.clear();
        loop {
            match self.fill().await {
                Ok(0) => return Ok(()),
                Ok(_) => self.buf.clear(),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops the connection abruptly: no close frame, and a TCP reset instead of a FIN (a client
    /// that crashed or lost its network).
    pub fn reset(self) {
        let _ = self.stream.set_zero_linger();
    }

    /// Sends one masked frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        self.stream.write_all(&frame).await
    }

    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(OP_TEXT, text.as_bytes()).await
    }

    /// Starts the closing handshake with `code`.
    pub async fn send_close(&mut self, code: u16) -> io::Result<()> {
        self.send(OP_CLOSE, &code.to_be_bytes()).await
    }

    /// Closes the sending side only (TCP half-close).
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}
