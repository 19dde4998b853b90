//! Token checking and (in dev mode) minting. A request or connection acts only as its token's
//! `sub` (I8); nothing in a body can change that.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::protocol::{unix_ms, UserId};

/// The server API's key (`--api-key`), kept as its SHA-256 digest: a request's key is hashed and the
/// two digests compared in constant time, so timing reveals neither the key's bytes nor its length.
/// A user's token is never a server key: only `X-Api-Key` is compared, never `Authorization`.
pub struct ApiKey {
    digest: [u8; 32],
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

impl ApiKey {
    pub fn new(key: &str) -> ApiKey {
        ApiKey { digest: sha256(key.as_bytes()) }
    }

    /// Whether `given` is the key.
    pub fn matches(&self, given: &[u8]) -> bool {
        let given = sha256(given);
        given.iter().zip(&self.digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// Lifetime of dev-mode tokens.
pub const DEV_TOKEN_TTL_SECS: u64 = 24 * 3600;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

/// Tokens already verified, so a client sending the same token on every request pays the
/// signature check once. Bounded: cleared when it reaches this many entries.
const VERIFIED_CACHE_MAX: usize = 100_000;

/// HS256 keys plus the validation rules.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Token -> (subject, expiry in unix seconds): a hit is as good as a verification until `exp`.
    verified: dashmap::DashMap<Box<str>, (UserId, Option<u64>)>,
}

impl Auth {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` is optional in the contract, but checked when present.
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.leeway = 5;
        Auth {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            verified: dashmap::DashMap::new(),
        }
    }

    /// The user a token speaks for.
    pub fn verify(&self, token: &str) -> Result<UserId, ApiError> {
        if let Some(hit) = self.verified.get(token) {
            let (user, exp) = hit.value();
            if exp.is_none_or(|exp| unix_ms() / 1000 < exp) {
                return Ok(user.clone());
            }
        }
        let (user, exp) = self.verify_uncached(token)?;
        if self.verified.len() >= VERIFIED_CACHE_MAX {
            self.verified.clear();
        }
        self.verified.insert(Box::from(token), (user.clone(), exp));
        Ok(user)
    }

    fn verify_uncached(&self, token: &str) -> Result<(UserId, Option<u64>), ApiError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            let why = match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "the token's signature is not valid",
                _ => "the token is malformed or not an HS256 JWT",
            };
            ApiError::Unauthorized(why.into())
        })?;
        let user = UserId::parse(&data.claims.sub)
            .map_err(|e| ApiError::Unauthorized(format!("the token's subject is not a valid user id: {e}")))?;
        Ok((user, data.claims.exp))
    }

    /// A token for `user`, valid for `ttl_secs`.
    pub fn mint(&self, user: &UserId, ttl_secs: u64) -> Result<String, ApiError> {
        let claims = Claims { sub: user.to_string(), exp: Some(unix_ms() / 1000 + ttl_secs) };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| ApiError::Unavailable("could not sign a token".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_ones_fail() {
        let a = Auth::new("secret-one-secret-one");
        let b = Auth::new("secret-two-secret-two");
        let alice = UserId::parse("alice").unwrap();
        let t = a.mint(&alice, 60).unwrap();
        assert_eq!(a.verify(&t).unwrap(), alice);
        assert!(matches!(b.verify(&t), Err(ApiError::Unauthorized(_))));
        assert!(matches!(a.verify("garbage"), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn a_cached_token_still_expires() {
        let a = Auth::new("secret-one-secret-one");
        let alice = UserId::parse("alice").unwrap();
        let t = a.mint(&alice, 60).unwrap();
        assert_eq!(a.verify(&t).unwrap(), alice);
        assert_eq!(a.verify(&t).unwrap(), alice, "served from the cache");
        // Pretend the cached entry's expiry passed: the next check verifies again (and fails on a
        // token that is really expired).
        a.verified.insert(Box::from(t.as_str()), (alice.clone(), Some(1)));
        assert_eq!(a.verify(&t).unwrap(), alice, "re-verified: the token itself is still valid");
        let claims = Claims { sub: "alice".into(), exp: Some(unix_ms() / 1000 - 3600) };
        let old = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"secret-one-secret-one"))
            .unwrap();
        a.verified.insert(Box::from(old.as_str()), (alice.clone(), claims.exp));
        assert!(a.verify(&old).is_err(), "an expired cached token is refused");
    }

    #[test]
    fn expired_tokens_fail() {
        let a = Auth::new("secret-one-secret-one");
        let claims = Claims { sub: "alice".into(), exp: Some(unix_ms() / 1000 - 3600) };
        let t = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"secret-one-secret-one"))
            .unwrap();
        let err = a.verify(&t).unwrap_err();
        assert!(err.to_string().contains("expired"));
    }

    #[test]
    fn the_api_key_matches_only_itself() {
        let key = ApiKey::new("server-key-0123456789");
        assert!(key.matches(b"server-key-0123456789"));
        assert!(!key.matches(b"server-key-012345678"));
        assert!(!key.matches(b"server-key-01234567890"));
        assert!(!key.matches(b""));
    }
}
