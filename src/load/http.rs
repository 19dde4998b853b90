//! HTTP for one client thread: a keep-alive pool sized to the thread's concurrency, and a second
//! client without a connection limit for event streams (an upgraded WebSocket or an SSE body keeps
//! its pool slot for as long as it is open).

use std::time::Duration;

use awc::http::Method;
use bytes::Bytes;
use serde::Serialize;

use super::error::LoadError;
use super::wire::{snippet, ErrorBody};

/// Largest response body read.
const MAX_BODY: usize = 1 << 20;

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, LoadError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            LoadError::Transport(format!("unexpected body ({e}): {}", snippet(&String::from_utf8_lossy(&self.body))))
        })
    }

    /// The contract error code, if the body is an error.
    pub fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<ErrorBody>(&self.body).ok().map(|e| e.error.code)
    }

    /// `429 rate_limited`: status and code only, so failures of one kind group together.
    pub fn brief(&self) -> String {
        match self.error_code() {
            Some(code) => format!("{} {code}", self.status),
            None => format!(
                "{} {}",
                self.status,
                snippet(&String::from_utf8_lossy(&self.body)).chars().take(60).collect::<String>()
            ),
        }
    }

    /// `404 not_found: <message>`, for messages.
    pub fn describe(&self) -> String {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(e) => format!("{} {}: {}", self.status, e.error.code, snippet(&e.error.message)),
            Err(_) => format!("{} {}", self.status, snippet(&String::from_utf8_lossy(&self.body))),
        }
    }
}

/// The HTTP side of one client thread. Not `Send`: each thread builds its own.
pub struct Http {
    client: awc::Client,
    streams: awc::Client,
    base: String,
    timeout: Duration,
}

impl Http {
    /// `connections` bounds the keep-alive pool; streams are not bounded here (the scenario bounds them).
    pub fn new(base: &str, connections: usize, timeout: Duration) -> Http {
        let client = awc::Client::builder()
            .connector(awc::Connector::new().limit(connections.max(1)).timeout(timeout))
            .timeout(timeout)
            .disable_redirects()
            .finish();
        let streams = awc::Client::builder()
            .connector(awc::Connector::new().limit(0).timeout(timeout))
            .timeout(timeout)
            .disable_redirects()
            .finish();
        Http { client, streams, base: base.to_string(), timeout }
    }

    /// The same pools (and connection limit), sending to another base URL.
    pub fn with_base(&self, base: &str) -> Http {
        Http {
            client: self.client.clone(),
            streams: self.streams.clone(),
            base: base.to_string(),
            timeout: self.timeout,
        }
    }

    /// The client for WebSocket and SSE connections.
    pub fn streams(&self) -> &awc::Client {
        &self.streams
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends one request and reads the whole answer, bounded by the request timeout.
    pub async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&B>,
    ) -> Result<Reply, LoadError> {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req, body).await
    }

    /// `POST` to the server API (`/v1/server/...`) with its key in `X-Api-Key`.
    pub async fn post_with_api_key<B: Serialize>(
        &self,
        path: &str,
        api_key: &str,
        body: &B,
    ) -> Result<Reply, LoadError> {
        let req = self.client.post(self.url(path)).insert_header(("X-Api-Key", api_key));
        self.send(req, Some(body)).await
    }

    async fn send<B: Serialize>(&self, req: awc::ClientRequest, body: Option<&B>) -> Result<Reply, LoadError> {
        let fut = async {
            let mut res = match body {
                Some(b) => req.send_json(b).await,
                None => req.send().await,
            }
            .map_err(|e| LoadError::Transport(format!("request failed: {e}")))?;
            let body =
                res.body().limit(MAX_BODY).await.map_err(|e| LoadError::Transport(format!("body failed: {e}")))?;
            Ok(Reply { status: res.status().as_u16(), body })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| LoadError::Transport(format!("no answer within {} ms", self.timeout.as_millis())))?
    }

    pub async fn post<B: Serialize>(&self, path: &str, token: Option<&str>, body: &B) -> Result<Reply, LoadError> {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Reply, LoadError> {
        self.call::<()>(Method::GET, path, token, None).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Result<Reply, LoadError> {
        self.call::<()>(Method::DELETE, path, token, None).await
    }
}
