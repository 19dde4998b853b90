//! Identifier newtypes, validated once at the edge so the rest of the server can trust them.
//!
//! A `UserId` is 1..=64 characters of `[A-Za-z0-9_.-]` (the contract); it is reference counted because
//! the same id is copied into pair keys, events and session routes on every action.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest user id the contract allows.
pub const MAX_USER_ID_LEN: usize = 64;
/// Longest idempotency key or client `ref` accepted.
pub const MAX_KEY_LEN: usize = 128;
/// Number of slots users and pairs hash to. Fixed: slot numbers are embedded in match and room ids.
pub const SLOT_COUNT: u16 = 16384;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("may only contain letters, digits, '_', '.' and '-'")]
    BadChar,
}

fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-'
}

fn check_id(s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > max {
        return Err(IdError::TooLong(max));
    }
    if !s.bytes().all(is_id_char) {
        return Err(IdError::BadChar);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $label:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_id(s, $max)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).map_err(|e| {
                    serde::de::Error::custom(format!("invalid {}: {}", $label, e))
                })
            }
        }
    };
}

id_type!(
    /// A user, as named by a token's `sub` or a swipe's `target`.
    UserId,
    "user id",
    MAX_USER_ID_LEN
);
id_type!(
    /// A client-chosen idempotency key for a swipe.
    SwipeId,
    "swipe_id",
    MAX_KEY_LEN
);
id_type!(
    /// An idempotency key of a server-API publish (`POST /v1/server/publish`).
    PublishKey,
    "key",
    MAX_KEY_LEN
);
id_type!(
    /// A server-issued match id: `<slot>.<random>`, so the slot (and so the owning shard) can be
    /// found from the id alone.
    MatchId,
    "match id",
    MAX_KEY_LEN
);
id_type!(
    /// A server-issued room id, shaped like a match id.
    RoomId,
    "room id",
    MAX_KEY_LEN
);
id_type!(
    /// A spin pool's name.
    PoolName,
    "pool name",
    MAX_USER_ID_LEN
);

/// A fresh random suffix for server-issued ids (122 random bits, so collisions are not a concern).
pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

macro_rules! slotted_id {
    ($name:ident) => {
        impl $name {
            /// A new id that carries `slot`, so any node can route it to its owner.
            pub fn new_in_slot(slot: u16) -> Self {
                Self(Arc::from(format!("{}.{}", slot, random_suffix())))
            }

            /// The slot this id was issued in, if it has the server's shape (a slot in range, a dot,
            /// a suffix). Ids of any other shape were never issued: their lookups answer 404.
            pub fn slot(&self) -> Option<u16> {
                let (slot, rest) = self.0.split_once('.')?;
                if rest.is_empty() || slot.is_empty() || !slot.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                slot.parse().ok().filter(|&s| s < SLOT_COUNT)
            }
        }
    };
}
slotted_id!(MatchId);
slotted_id!(RoomId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_follow_the_contract() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("a.b-c_D9").is_ok());
        assert_eq!(UserId::parse(""), Err(IdError::Empty));
        assert_eq!(UserId::parse(&"x".repeat(65)), Err(IdError::TooLong(64)));
        assert!(UserId::parse(&"x".repeat(64)).is_ok());
        assert_eq!(UserId::parse("bob!"), Err(IdError::BadChar));
        assert_eq!(UserId::parse("é"), Err(IdError::BadChar));
    }

    #[test]
    fn slotted_ids_round_trip_their_slot() {
        let m = MatchId::new_in_slot(4242);
        assert_eq!(m.slot(), Some(4242));
        assert_eq!(MatchId::parse("nope").unwrap().slot(), None);
        assert_eq!(MatchId::parse("12.").map(|m| m.slot()), Ok(None));
        assert_eq!(RoomId::parse("16383.x").unwrap().slot(), Some(16383));
        for outside in ["16384.x", "65535.x", "65536.x", "99999999999.x", "-1.x", "007x.y", ".x"] {
            assert_eq!(RoomId::parse(outside).unwrap().slot(), None, "{outside}");
            assert_eq!(MatchId::parse(outside).unwrap().slot(), None, "{outside}");
        }
    }

    #[test]
    fn deserialize_rejects_bad_ids() {
        let r: Result<UserId, _> = serde_json::from_str("\"a b\"");
        assert!(r.is_err());
    }
}
