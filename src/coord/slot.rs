//! Fixed hashing of users and unordered user pairs to slots. The function never changes (ids issued
//! in one version embed their slot), so it has test vectors.

pub use crate::protocol::ids::SLOT_COUNT;
use crate::protocol::UserId;

/// 64-bit FNV-1a: tiny, fast on short ids, and stable across platforms and versions.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator no id can contain, so ("ab","c") and ("a","bc") differ.
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The unordered pair {a, b}, stored with the smaller id first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PairKey {
    pub low: UserId,
    pub high: UserId,
}

impl PairKey {
    /// The pair of two distinct users; `None` when they are the same user.
    pub fn new(a: &UserId, b: &UserId) -> Option<PairKey> {
        match a.cmp(b) {
            std::cmp::Ordering::Less => Some(PairKey { low: a.clone(), high: b.clone() }),
            std::cmp::Ordering::Greater => Some(PairKey { low: b.clone(), high: a.clone() }),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// 0 if `user` is the low side, 1 if the high side.
    pub fn side_of(&self, user: &UserId) -> Option<usize> {
        if *user == self.low {
            Some(0)
        } else if *user == self.high {
            Some(1)
        } else {
            None
        }
    }

    pub fn user(&self, side: usize) -> &UserId {
        if side == 0 {
            &self.low
        } else {
            &self.high
        }
    }

    pub fn slot(&self) -> u16 {
        pair_slot(&self.low, &self.high)
    }
}

/// The slot of the unordered pair {a, b}.
pub fn pair_slot(a: &UserId, b: &UserId) -> u16 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    (fnv1a(&[lo.as_str().as_bytes(), hi.as_str().as_bytes()]) % u64::from(SLOT_COUNT)) as u16
}

/// The slot of a single user (its event log, matches index and place).
pub fn user_slot(user: &UserId) -> u16 {
    name_slot(user.as_str())
}

/// The slot of any single name (a user, a pool).
pub fn name_slot(name: &str) -> u16 {
    (fnv1a(&[name.as_bytes()]) % u64::from(SLOT_COUNT)) as u16
}

/// Which of `shards` local shards serves `slot`.
pub fn shard_of(slot: u16, shards: usize) -> usize {
    (usize::from(slot) * shards) / usize::from(SLOT_COUNT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn pair_slot_is_unordered_and_stable() {
        assert_eq!(pair_slot(&u("alice"), &u("bob")), pair_slot(&u("bob"), &u("alice")));
        // Test vectors: these values are part of the id format and must never change.
        assert_eq!(pair_slot(&u("alice"), &u("bob")), 5043);
        assert_eq!(user_slot(&u("alice")), 14599);
        assert_ne!(pair_slot(&u("ab"), &u("c")), pair_slot(&u("a"), &u("bc")));
    }

    #[test]
    fn shards_cover_every_slot() {
        assert_eq!(shard_of(0, 4), 0);
        assert_eq!(shard_of(SLOT_COUNT - 1, 4), 3);
        assert_eq!(shard_of(SLOT_COUNT - 1, 1), 0);
    }

    #[test]
    fn pair_key_refuses_self_pairs() {
        assert!(PairKey::new(&u("a"), &u("a")).is_none());
        let k = PairKey::new(&u("b"), &u("a")).unwrap();
        assert_eq!(k.low, u("a"));
        assert_eq!(k.side_of(&u("b")), Some(1));
    }
}
