//! Who owns which slot: rendezvous (highest random weight) hashing over the live members. Each
//! slot goes to the member with the highest `weight(member, slot)`, so when a member joins or
//! leaves only the slots it gains or loses move; every other slot keeps its owner.

use std::sync::Arc;

use crate::coord::slot::SLOT_COUNT;

/// A live node as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub id: Arc<str>,
    /// Base URL for forwarded actions and streams, e.g. `http://10.0.0.5:8080`.
    pub url: Arc<str>,
}

impl Member {
    /// The stored form in the members set: `id|url`.
    pub fn encode(&self) -> String {
        format!("{}|{}", self.id, self.url)
    }

    pub fn decode(s: &str) -> Option<Member> {
        let (id, url) = s.split_once('|')?;
        (!id.is_empty() && !url.is_empty()).then(|| Member { id: Arc::from(id), url: Arc::from(url) })
    }
}

/// The slot table computed from one membership list.
#[derive(Debug, Clone)]
pub struct Ownership {
    /// Sorted by id, so every node computes the same table from the same list.
    pub members: Vec<Member>,
    /// Per slot, the index of its owner in `members`.
    owners: Vec<u16>,
}

/// The weight of `member` for `slot`: FNV-1a of the pair, then a 64-bit finalizer so short,
/// similar ids (node-1, node-2) still spread evenly.
fn weight(member: &str, slot: u16) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.as_bytes().iter().chain(&[0xff]).chain(&slot.to_le_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl Ownership {
    pub fn new(mut members: Vec<Member>) -> Ownership {
        members.sort();
        members.dedup_by(|a, b| a.id == b.id);
        let owners = (0..SLOT_COUNT)
            .map(|slot| {
                (0..members.len())
                    .max_by_key(|i| (weight(&members[*i].id, slot), std::cmp::Reverse(*i)))
                    .map_or(0, |i| i as u16)
            })
            .collect();
        Ownership { members, owners }
    }

    /// The owner of `slot`, if there is any member.
    pub fn owner(&self, slot: u16) -> Option<&Member> {
        self.members.get(usize::from(*self.owners.get(usize::from(slot))?))
    }

    /// Whether the member `id` owns `slot`.
    pub fn owned_by(&self, slot: u16, id: &str) -> bool {
        self.owner(slot).is_some_and(|m| &*m.id == id)
    }

    /// How many slots each member owns, in the order of `members`.
    pub fn slot_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.members.len()];
        for &i in &self.owners {
            if let Some(c) = counts.get_mut(usize::from(i)) {
                *c += 1;
            }
        }
        counts
    }

    /// The slots `id` owns.
    pub fn slots_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = u16> + 'a {
        (0..SLOT_COUNT).filter(move |s| self.owned_by(*s, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<Member> {
        ids.iter().map(|id| Member { id: Arc::from(*id), url: Arc::from(format!("http://{id}")) }).collect()
    }

    #[test]
    fn slots_spread_evenly_and_a_leaving_member_moves_only_its_own() {
        let three = Ownership::new(members(&["node-a", "node-b", "node-c"]));
        for id in ["node-a", "node-b", "node-c"] {
            let n = three.slots_of(id).count();
            assert!((4800..6100).contains(&n), "{id} owns {n} of 16384");
        }
        let two = Ownership::new(members(&["node-a", "node-c"]));
        for slot in 0..SLOT_COUNT {
            let before = three.owner(slot).map(|m| m.id.clone());
            let after = two.owner(slot).map(|m| m.id.clone());
            if before.as_deref() != Some("node-b") {
                assert_eq!(before, after, "slot {slot} moved although its owner stayed");
            }
        }
        assert_eq!(Member::decode(&three.members[1].encode()), Some(three.members[1].clone()));
    }

    #[test]
    fn every_node_computes_the_same_table_whatever_order_it_read_the_list_in() {
        let a = Ownership::new(members(&["x", "y", "z"]));
        let b = Ownership::new(members(&["z", "x", "y"]));
        assert!((0..SLOT_COUNT).all(|s| a.owner(s) == b.owner(s)));
        assert!(Ownership::new(Vec::new()).owner(7).is_none());
    }
}
