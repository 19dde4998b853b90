//! Tokens for generated users: minted locally with the server's HS256 secret (`--jwt-secret`), or
//! asked of a dev-mode server with `POST /v1/dev/token`.

use std::sync::Arc;

use futures_util::{StreamExt as _, TryStreamExt as _};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

use super::error::LoadError;
use super::http::Http;
use super::wire::TokenBody;

/// Lifetime of minted tokens: longer than any run.
const TOKEN_TTL_SECS: u64 = 6 * 3600;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

/// Where tokens come from.
#[derive(Clone)]
pub enum TokenSource {
    /// `POST /v1/dev/token` (the server must be in dev mode).
    Dev,
    /// Signed here with the server's secret.
    Mint(Arc<EncodingKey>),
}

impl TokenSource {
    pub fn new(secret: Option<&str>) -> TokenSource {
        match secret {
            Some(s) => TokenSource::Mint(Arc::new(EncodingKey::from_secret(s.as_bytes()))),
            None => TokenSource::Dev,
        }
    }

    /// A token for `user`.
    pub async fn token(&self, http: &Http, user: &str) -> Result<String, LoadError> {
        match self {
            TokenSource::Mint(key) => {
                let exp = crate::protocol::unix_ms() / 1000 + TOKEN_TTL_SECS;
                encode(&Header::default(), &Claims { sub: user, exp }, key)
                    .map_err(|e| LoadError::Setup(format!("cannot sign a token: {e}")))
            }
            TokenSource::Dev => {
                let reply = http
                    .post("/v1/dev/token", None, &serde_json::json!({ "user_id": user }))
                    .await
                    .map_err(|e| LoadError::Setup(format!("POST /v1/dev/token: {e}")))?;
                if !reply.is_success() {
                    return Err(LoadError::Setup(format!(
                        "POST /v1/dev/token for {user} answered {} (not in dev mode? then pass --jwt-secret)",
                        reply.describe()
                    )));
                }
                Ok(reply.json::<TokenBody>()?.token)
            }
        }
    }

    /// Tokens for `users`, in order, `concurrency` at a time.
    pub async fn tokens(&self, http: &Http, users: &[String], concurrency: usize) -> Result<Vec<String>, LoadError> {
        futures_util::stream::iter(users.iter())
            .map(|u| self.token(http, u))
            .buffered(concurrency.max(1))
            .try_collect()
            .await
    }
}
