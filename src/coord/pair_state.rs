//! The pure decision logic for one unordered pair: likes, the match, unmatch and swipe idempotency.
//! No actors, clocks or I/O here: the shard feeds commands in one at a time and carries out the
//! returned effects, so this is what unit tests, benches and simulations drive directly.
//!
//! Because one shard applies one command at a time to a pair, "both like each other" is decided
//! exactly once, whatever order the two swipes arrive in (I1).

use std::collections::VecDeque;

use smallvec::SmallVec;

use super::slot::PairKey;
use crate::protocol::{Direction, Match, MatchId, SwipeId, SwipeResponse, SwipeStatus, UserId};

/// What a decision asks the shard to do after it is made (persist, then notify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Both sides like each other: tell both users.
    MatchCreated(Match),
    /// A member ended the match: tell both users.
    Unmatched { match_: Match, by: UserId },
}

/// A swipe's answer plus what it set in motion.
#[derive(Debug)]
pub struct SwipeDecision {
    pub reply: SwipeResponse,
    /// True when the idempotency key was seen before and nothing changed.
    pub replayed: bool,
    pub effects: SmallVec<[Effect; 1]>,
}

/// Why an unmatch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnmatchError {
    NotFound,
}

/// Everything known about one pair. Sides are indexed as in `PairKey` (0 = low id, 1 = high id).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct PairState {
    /// Each side's latest swipe on the other, if any.
    likes: [Option<Direction>; 2],
    /// The pair's active match (I1: at most one).
    active: Option<Match>,
    /// Matches of this pair that were ended, so a repeated unmatch is answered the same way.
    ended: SmallVec<[MatchId; 1]>,
    /// Recent idempotency keys per side with the answer they got, oldest first.
    seen: [VecDeque<(SwipeId, SwipeResponse)>; 2],
}

impl PairState {
    /// Applies `side`'s swipe. `new_match_id` is called only when a match is created.
    #[allow(clippy::too_many_arguments)]
    pub fn swipe(
        &mut self,
        key: &PairKey,
        side: usize,
        direction: Direction,
        swipe_id: Option<&SwipeId>,
        now_ms: u64,
        max_remembered_ids: usize,
        new_match_id: impl FnOnce() -> MatchId,
    ) -> SwipeDecision {
        if let Some(id) = swipe_id {
            if let Some((_, reply)) = self.seen[side].iter().find(|(seen, _)| seen == id) {
                return SwipeDecision { reply: reply.clone(), replayed: true, effects: SmallVec::new() };
            }
        }
        let mut effects = SmallVec::new();
        self.likes[side] = Some(direction);
        let reply = match direction {
            Direction::Right => {
                if let Some(m) = &self.active {
                    SwipeResponse { status: SwipeStatus::Matched, match_: Some(m.clone()) }
                } else if self.likes[1 - side] == Some(Direction::Right) {
                    let m = Match {
                        match_id: new_match_id(),
                        users: [key.low.clone(), key.high.clone()],
                        created_at: now_ms,
                    };
                    self.active = Some(m.clone());
                    effects.push(Effect::MatchCreated(m.clone()));
                    SwipeResponse { status: SwipeStatus::Matched, match_: Some(m) }
                } else {
                    SwipeResponse { status: SwipeStatus::Pending, match_: None }
                }
            }
            // A left swipe withdraws a pending like but never undoes a match (that is unmatch).
            Direction::Left => SwipeResponse { status: SwipeStatus::Passed, match_: self.active.clone() },
        };
        if let Some(id) = swipe_id {
            let seen = &mut self.seen[side];
            if seen.len() >= max_remembered_ids {
                seen.pop_front();
            }
            seen.push_back((id.clone(), reply.clone()));
        }
        SwipeDecision { reply, replayed: false, effects }
    }

    /// Ends the active match `match_id` on behalf of `by`. Repeating it answers the same, changing nothing.
    pub fn unmatch(&mut self, match_id: &MatchId, by: &UserId) -> Result<Option<Effect>, UnmatchError> {
        match &self.active {
            Some(m) if m.match_id == *match_id => {
                let m = m.clone();
                self.active = None;
                // Both must like each other again to match again.
                self.likes = [None, None];
                self.ended.push(m.match_id.clone());
                Ok(Some(Effect::Unmatched { match_: m, by: by.clone() }))
            }
            _ if self.ended.contains(match_id) => Ok(None),
            _ => Err(UnmatchError::NotFound),
        }
    }

    pub fn active_match(&self) -> Option<&Match> {
        self.active.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn key() -> PairKey {
        PairKey::new(&u("alice"), &u("bob")).unwrap()
    }

    fn swipe(p: &mut PairState, side: usize, d: Direction, id: Option<&str>) -> SwipeDecision {
        let id = id.map(|s| SwipeId::parse(s).unwrap());
        p.swipe(&key(), side, d, id.as_ref(), 1, 4, || MatchId::parse("1.m").unwrap())
    }

    #[test]
    fn mutual_right_swipes_match_once_in_either_order() {
        for first in [0, 1] {
            let mut p = PairState::default();
            let a = swipe(&mut p, first, Direction::Right, None);
            assert_eq!(a.reply.status, SwipeStatus::Pending);
            let b = swipe(&mut p, 1 - first, Direction::Right, None);
            assert_eq!(b.reply.status, SwipeStatus::Matched);
            assert_eq!(b.effects.len(), 1);
            // More right swipes see the same match and create nothing.
            let c = swipe(&mut p, first, Direction::Right, None);
            assert_eq!(c.reply.status, SwipeStatus::Matched);
            assert!(c.effects.is_empty());
        }
    }

    #[test]
    fn left_withdraws_a_pending_like_but_not_a_match() {
        let mut p = PairState::default();
        swipe(&mut p, 0, Direction::Right, None);
        assert_eq!(swipe(&mut p, 0, Direction::Left, None).reply.status, SwipeStatus::Passed);
        assert_eq!(swipe(&mut p, 1, Direction::Right, None).reply.status, SwipeStatus::Pending);
        let m = swipe(&mut p, 0, Direction::Right, None);
        assert_eq!(m.reply.status, SwipeStatus::Matched);
        let l = swipe(&mut p, 1, Direction::Left, None);
        assert_eq!(l.reply.status, SwipeStatus::Passed);
        assert!(p.active_match().is_some());
    }

    #[test]
    fn a_repeated_swipe_id_replays_the_first_answer() {
        let mut p = PairState::default();
        let first = swipe(&mut p, 0, Direction::Right, Some("k"));
        swipe(&mut p, 0, Direction::Left, Some("k2"));
        let again = swipe(&mut p, 0, Direction::Right, Some("k"));
        assert!(again.replayed);
        assert_eq!(again.reply, first.reply);
        // The replay did not re-like: the other side's right swipe is still only pending.
        assert_eq!(swipe(&mut p, 1, Direction::Right, None).reply.status, SwipeStatus::Pending);
    }

    #[test]
    fn unmatch_ends_the_match_once() {
        let mut p = PairState::default();
        swipe(&mut p, 0, Direction::Right, None);
        let m = swipe(&mut p, 1, Direction::Right, None).reply.match_.unwrap();
        assert!(matches!(p.unmatch(&m.match_id, &u("alice")), Ok(Some(Effect::Unmatched { .. }))));
        assert_eq!(p.unmatch(&m.match_id, &u("alice")), Ok(None));
        assert_eq!(p.unmatch(&MatchId::parse("1.other").unwrap(), &u("bob")), Err(UnmatchError::NotFound));
        // Likes were cleared: one new right swipe is only pending.
        assert_eq!(swipe(&mut p, 0, Direction::Right, None).reply.status, SwipeStatus::Pending);
    }
}

/// Seeded random interleavings of both sides' swipes (with retried and evicted idempotency keys)
/// and unmatches, checked step by step against a plain model of the contract: a match exists
/// exactly when both sides' latest swipes are right and nobody unmatched since, it is created once,
/// and a repeated key answers what it answered the first time.
#[cfg(test)]
mod simulation {
    use std::collections::VecDeque;

    use rand::{Rng, SeedableRng};

    use super::*;

    const KEYS_KEPT: usize = 3;

    #[derive(Default)]
    struct Model {
        likes: [Option<Direction>; 2],
        active: Option<MatchId>,
        seen: [VecDeque<(String, SwipeResponse)>; 2],
        created: usize,
    }

    #[test]
    fn random_interleavings_agree_with_the_model() {
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let key = PairKey::new(&UserId::parse("a").unwrap(), &UserId::parse("b").unwrap()).unwrap();
            let mut state = PairState::default();
            let mut model = Model::default();
            let mut next_match = 0u32;
            for step in 0..300 {
                let side = rng.gen_range(0..2usize);
                if rng.gen_bool(0.08) {
                    // Unmatch (of the active match, or of a made-up one).
                    let id = model.active.clone().unwrap_or_else(|| MatchId::parse("9.none").unwrap());
                    let res = state.unmatch(&id, key.user(side));
                    match model.active.take() {
                        Some(_) => {
                            assert!(matches!(res, Ok(Some(Effect::Unmatched { .. }))), "seed {seed} step {step}");
                            model.likes = [None, None];
                        }
                        None => assert!(res.is_ok() || res == Err(UnmatchError::NotFound), "seed {seed} step {step}"),
                    }
                    continue;
                }
                let direction = if rng.gen_bool(0.7) { Direction::Right } else { Direction::Left };
                // Keys come from a small space, so repeats (retries) and evicted keys both happen.
                let id = rng.gen_bool(0.6).then(|| format!("k{}", rng.gen_range(0..6)));
                let swipe_id = id.as_ref().map(|s| SwipeId::parse(s).unwrap());
                let decision = state.swipe(&key, side, direction, swipe_id.as_ref(), step, KEYS_KEPT, || {
                    next_match += 1;
                    MatchId::parse(&format!("1.m{next_match}")).unwrap()
                });
                let remembered = id.as_ref().and_then(|k| model.seen[side].iter().find(|(s, _)| s == k));
                if let Some((_, first)) = remembered {
                    assert!(decision.replayed, "seed {seed} step {step}: a remembered key was applied again");
                    assert_eq!(&decision.reply, first, "seed {seed} step {step}");
                    assert!(decision.effects.is_empty());
                    continue;
                }
                assert!(!decision.replayed, "seed {seed} step {step}");
                model.likes[side] = Some(direction);
                let expected_status = match direction {
                    Direction::Left => SwipeStatus::Passed,
                    Direction::Right if model.active.is_some() => SwipeStatus::Matched,
                    Direction::Right if model.likes[1 - side] == Some(Direction::Right) => {
                        model.created += 1;
                        SwipeStatus::Matched
                    }
                    Direction::Right => SwipeStatus::Pending,
                };
                assert_eq!(decision.reply.status, expected_status, "seed {seed} step {step}");
                if let Some(Effect::MatchCreated(m)) = decision.effects.first() {
                    assert!(model.active.is_none(), "seed {seed} step {step}: a second active match");
                    model.active = Some(m.match_id.clone());
                }
                assert_eq!(state.active_match().map(|m| m.match_id.clone()), model.active, "seed {seed} step {step}");
                if let Some(k) = id {
                    let seen = &mut model.seen[side];
                    if seen.len() == KEYS_KEPT {
                        seen.pop_front();
                    }
                    seen.push_back((k, decision.reply.clone()));
                }
            }
            assert!(model.created > 0, "seed {seed} never made a match: the simulation is not exercising it");
        }
    }
}
