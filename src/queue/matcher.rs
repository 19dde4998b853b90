//! Pure pairing logic of one pool: who waits, in which order, and who is compatible with whom.
//! No actors or clocks (the caller passes `now_ms`), so it is unit-tested, benched, and driven by
//! the pool coordinator one command at a time.
//!
//! Order is FIFO by join. A join is paired at once with the best compatible waiting user (I6);
//! `rescan` pairs users whose compatibility changed with time (widening rating tolerance, a
//! rematch window running out).

use std::collections::{BTreeMap, HashMap};

use super::rules::{AttributeRule, PoolRules};
use crate::coord::slot::PairKey;
use crate::protocol::UserId;

/// Most waiting users examined for one pairing, so a join costs bounded time in a huge pool.
pub const MAX_SCAN: usize = 512;

/// A waiting user and what the rules look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub user: UserId,
    pub rating: Option<i32>,
    pub region: Option<String>,
    pub tags: Vec<String>,
    /// When the user (re)joined, for tolerance widening, priority and the wait estimate.
    pub joined_ms: u64,
}

/// What a join led to.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOutcome {
    /// Already waiting: one entry, same answer.
    AlreadyWaiting {
        position: u64,
    },
    /// Paired with `partner`, who was waiting; neither waits any more.
    Paired {
        partner: Candidate,
        joiner: Candidate,
    },
    Queued {
        position: u64,
    },
}

pub struct Matcher {
    rules: PoolRules,
    /// Waiting users by join sequence number (FIFO order).
    waiting: BTreeMap<u64, Candidate>,
    seq_of: HashMap<UserId, u64>,
    next_seq: u64,
    /// Pairs that met recently, with when they may meet again.
    recent: HashMap<PairKey, u64>,
    /// Exponentially weighted average of observed waits.
    wait_ewma_ms: Option<f64>,
}

impl Matcher {
    pub fn new(rules: PoolRules) -> Self {
        Matcher {
            rules,
            waiting: BTreeMap::new(),
            seq_of: HashMap::new(),
            next_seq: 0,
            recent: HashMap::new(),
            wait_ewma_ms: None,
        }
    }

    pub fn rules(&self) -> &PoolRules {
        &self.rules
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_waiting(&self, user: &UserId) -> bool {
        self.seq_of.contains_key(user)
    }

    /// 1-based place in line.
    pub fn position(&self, user: &UserId) -> Option<u64> {
        let seq = *self.seq_of.get(user)?;
        Some(self.waiting.range(..seq).count() as u64 + 1)
    }

    pub fn estimated_wait_ms(&self) -> u64 {
        self.wait_ewma_ms.map(|w| w.round() as u64).unwrap_or(0)
    }

    pub fn join(&mut self, joiner: Candidate, now_ms: u64) -> JoinOutcome {
        if let Some(position) = self.position(&joiner.user) {
            return JoinOutcome::AlreadyWaiting { position };
        }
        match self.best_partner(&joiner, None, now_ms) {
            Some(seq) => {
                let partner = self.take(seq);
                self.paired(&partner, &joiner, now_ms);
                JoinOutcome::Paired { partner, joiner }
            }
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.seq_of.insert(joiner.user.clone(), seq);
                self.waiting.insert(seq, joiner);
                JoinOutcome::Queued { position: self.waiting.len() as u64 }
            }
        }
    }

    /// Puts a stored waiter back in line (after a restart), behind those already restored, without
    /// pairing; the caller runs `rescan` once all are back.
    pub fn restore(&mut self, c: Candidate) {
        if self.is_waiting(&c.user) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(c.user.clone(), seq);
        self.waiting.insert(seq, c);
    }

    /// The waiting entry of `user`.
    pub fn get(&self, user: &UserId) -> Option<&Candidate> {
        self.waiting.get(self.seq_of.get(user)?)
    }

    /// Removes `user` from the line; false when not waiting.
    pub fn leave(&mut self, user: &UserId) -> bool {
        match self.seq_of.remove(user) {
            Some(seq) => {
                self.waiting.remove(&seq);
                true
            }
            None => false,
        }
    }

    /// Pairs waiting users that have become compatible (with time, or after a restore). Oldest first.
    pub fn rescan(&mut self, now_ms: u64) -> Vec<(Candidate, Candidate)> {
        self.recent.retain(|_, until| *until > now_ms);
        let mut pairs = Vec::new();
        let seqs: Vec<u64> = self.waiting.keys().take(MAX_SCAN).copied().collect();
        for seq in seqs {
            let Some(c) = self.waiting.get(&seq).cloned() else {
                continue;
            };
            if let Some(partner_seq) = self.best_partner(&c, Some(seq), now_ms) {
                let first = self.take(seq);
                let second = self.take(partner_seq);
                self.paired(&first, &second, now_ms);
                pairs.push((first, second));
            }
        }
        pairs
    }

    fn take(&mut self, seq: u64) -> Candidate {
        // Callers pass a sequence number they just read from `waiting`.
        let c = self.waiting.remove(&seq).unwrap_or_else(|| unreachable!("seq {seq} was just read"));
        self.seq_of.remove(&c.user);
        c
    }

    fn paired(&mut self, a: &Candidate, b: &Candidate, now_ms: u64) {
        if self.rules.rematch_window_ms > 0 {
            if let Some(key) = PairKey::new(&a.user, &b.user) {
                self.recent.insert(key, now_ms + self.rules.rematch_window_ms);
            }
        }
        for c in [a, b] {
            let waited = now_ms.saturating_sub(c.joined_ms) as f64;
            self.wait_ewma_ms = Some(match self.wait_ewma_ms {
                Some(avg) => avg * 0.9 + waited * 0.1,
                None => waited,
            });
        }
    }

    /// The best waiting partner for `c` (skipping `own_seq`), by score then age.
    fn best_partner(&self, c: &Candidate, own_seq: Option<u64>, now_ms: u64) -> Option<u64> {
        let scoring = self.rules.region == AttributeRule::Prefer
            || self.rules.tags == AttributeRule::Prefer
            || self.rules.priority_after_ms.is_some();
        let mut best: Option<(u32, u64)> = None;
        for (&seq, other) in self.waiting.iter().take(MAX_SCAN) {
            if Some(seq) == own_seq || other.user == c.user || !self.compatible(c, other, now_ms) {
                continue;
            }
            if !scoring {
                return Some(seq);
            }
            let score = self.score(c, other, now_ms);
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, seq));
            }
        }
        best.map(|(_, seq)| seq)
    }

    fn compatible(&self, a: &Candidate, b: &Candidate, now_ms: u64) -> bool {
        if let Some(key) = PairKey::new(&a.user, &b.user) {
            if self.recent.get(&key).is_some_and(|until| *until > now_ms) {
                return false;
            }
        }
        if let (Some(base), Some(ra), Some(rb)) = (self.rules.rating_tolerance, a.rating, b.rating) {
            let waited_s = now_ms.saturating_sub(a.joined_ms.min(b.joined_ms)) / 1000;
            let widened = u64::from(base) + u64::from(self.rules.rating_widen_per_sec) * waited_s;
            let tolerance = match self.rules.rating_max_tolerance {
                Some(max) => widened.min(u64::from(max)),
                None => widened,
            };
            if u64::from(ra.abs_diff(rb)) > tolerance {
                return false;
            }
        }
        if self.rules.region == AttributeRule::Require && a.region != b.region {
            return false;
        }
        if self.rules.tags == AttributeRule::Require && !tags_fit(a, b) {
            return false;
        }
        true
    }

    fn score(&self, a: &Candidate, b: &Candidate, now_ms: u64) -> u32 {
        let mut score = 0;
        if self.rules.region == AttributeRule::Prefer && a.region.is_some() && a.region == b.region {
            score += 1;
        }
        if self.rules.tags == AttributeRule::Prefer && shares_tag(a, b) {
            score += 1;
        }
        if let Some(after) = self.rules.priority_after_ms {
            if now_ms.saturating_sub(b.joined_ms) >= after {
                score += 10;
            }
        }
        score
    }
}

fn shares_tag(a: &Candidate, b: &Candidate) -> bool {
    a.tags.iter().any(|t| b.tags.contains(t))
}

/// Under `tags = "require"`: a common tag, or neither has tags.
fn tags_fit(a: &Candidate, b: &Candidate) -> bool {
    (a.tags.is_empty() && b.tags.is_empty()) || shares_tag(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(user: &str, joined_ms: u64) -> Candidate {
        Candidate { user: UserId::parse(user).unwrap(), rating: None, region: None, tags: vec![], joined_ms }
    }

    fn rated(user: &str, rating: i32, joined_ms: u64) -> Candidate {
        Candidate { rating: Some(rating), ..cand(user, joined_ms) }
    }

    fn partner_of(o: JoinOutcome) -> Option<String> {
        match o {
            JoinOutcome::Paired { partner, .. } => Some(partner.user.to_string()),
            _ => None,
        }
    }

    #[test]
    fn fifo_pairs_the_oldest_waiter_at_once() {
        let mut m = Matcher::new(PoolRules::default());
        assert_eq!(m.join(cand("a", 0), 0), JoinOutcome::Queued { position: 1 });
        assert_eq!(m.join(cand("a", 0), 1), JoinOutcome::AlreadyWaiting { position: 1 });
        assert_eq!(partner_of(m.join(cand("b", 2), 2)), Some("a".into()));
        assert_eq!(m.waiting(), 0);
    }

    #[test]
    fn rating_tolerance_widens_with_waiting() {
        let rules = PoolRules { rating_tolerance: Some(100), rating_widen_per_sec: 50, ..Default::default() };
        let mut m = Matcher::new(rules);
        m.join(rated("a", 1000, 0), 0);
        assert!(matches!(m.join(rated("b", 1300, 0), 0), JoinOutcome::Queued { .. }));
        assert_eq!(partner_of(m.join(rated("c", 1090, 0), 0)), Some("a".into()));
        // b waits; after 4 s the tolerance is 300 and a new 1600 fits b.
        assert!(m.rescan(1000).is_empty());
        let pairs = m.rescan(4000);
        assert!(pairs.is_empty(), "b is alone now");
        assert_eq!(partner_of(m.join(rated("d", 1600, 4000), 4000)), Some("b".into()));
    }

    #[test]
    fn region_require_keeps_regions_apart() {
        let rules = PoolRules { region: AttributeRule::Require, ..Default::default() };
        let mut m = Matcher::new(rules);
        let at = |u: &str, region: &str| Candidate { region: Some(region.into()), ..cand(u, 0) };
        m.join(at("us1", "us"), 0);
        assert!(matches!(m.join(at("eu1", "eu"), 0), JoinOutcome::Queued { position: 2 }));
        assert_eq!(partner_of(m.join(at("eu2", "eu"), 0)), Some("eu1".into()));
    }

    #[test]
    fn tags_prefer_picks_a_shared_tag_over_an_older_waiter() {
        // Ratings keep the two waiters apart from each other; the joiner fits both.
        let rules = PoolRules { rating_tolerance: Some(200), tags: AttributeRule::Prefer, ..Default::default() };
        let mut m = Matcher::new(rules);
        let tagged = |u: &str, rating: i32, tag: &str| Candidate { tags: vec![tag.into()], ..rated(u, rating, 0) };
        m.join(tagged("go", 1000, "go"), 0);
        assert!(matches!(m.join(tagged("py", 1300, "python"), 0), JoinOutcome::Queued { .. }));
        assert_eq!(partner_of(m.join(tagged("new", 1150, "python"), 0)), Some("py".into()));
    }

    #[test]
    fn tags_require_needs_a_common_tag() {
        let rules = PoolRules { tags: AttributeRule::Require, ..Default::default() };
        let mut m = Matcher::new(rules);
        let tagged = |u: &str, tag: &str| Candidate { tags: vec![tag.into()], ..cand(u, 0) };
        m.join(tagged("a", "go"), 0);
        assert!(matches!(m.join(tagged("b", "python"), 0), JoinOutcome::Queued { .. }));
        assert_eq!(partner_of(m.join(tagged("c", "python"), 0)), Some("b".into()));
    }

    #[test]
    fn recent_partners_are_not_rematched_until_the_window_ends() {
        let rules = PoolRules { rematch_window_ms: 1000, ..Default::default() };
        let mut m = Matcher::new(rules);
        m.join(cand("a", 0), 0);
        assert_eq!(partner_of(m.join(cand("b", 0), 0)), Some("a".into()));
        m.join(cand("a", 10), 10);
        assert!(matches!(m.join(cand("b", 10), 10), JoinOutcome::Queued { position: 2 }));
        assert_eq!(partner_of(m.join(cand("c", 20), 20)), Some("a".into()));
        m.join(cand("a", 30), 30);
        assert!(m.rescan(500).is_empty());
        let pairs = m.rescan(1100);
        assert_eq!(pairs.len(), 1);
    }

    #[test]
    fn long_waiters_get_priority_over_better_scores() {
        let rules = PoolRules {
            rating_tolerance: Some(200),
            tags: AttributeRule::Prefer,
            priority_after_ms: Some(5000),
            ..Default::default()
        };
        let mut m = Matcher::new(rules);
        m.join(rated("old", 1000, 0), 0);
        m.join(Candidate { tags: vec!["x".into()], ..rated("tagged", 1300, 5000) }, 5000);
        let joiner = Candidate { tags: vec!["x".into()], ..rated("new", 1150, 6000) };
        assert_eq!(partner_of(m.join(joiner, 6000)), Some("old".into()));
    }

    #[test]
    fn leave_removes_only_waiting_users() {
        let mut m = Matcher::new(PoolRules::default());
        m.join(cand("a", 0), 0);
        assert!(m.leave(&UserId::parse("a").unwrap()));
        assert!(!m.leave(&UserId::parse("a").unwrap()));
        assert!(matches!(m.join(cand("b", 0), 0), JoinOutcome::Queued { position: 1 }));
    }
}

/// Seeded random joins and leaves against a rated, region-restricted pool: nobody is paired twice
/// or while not waiting, every pair fits the rules, and no two users who fit each other are ever
/// left waiting side by side (I6, for rules that do not change with time).
#[cfg(test)]
mod simulation {
    use std::collections::HashSet;

    use rand::{Rng, SeedableRng};

    use super::*;

    fn fits(rules: &PoolRules, a: &Candidate, b: &Candidate) -> bool {
        let rating_ok = match (rules.rating_tolerance, a.rating, b.rating) {
            (Some(t), Some(x), Some(y)) => x.abs_diff(y) <= t,
            _ => true,
        };
        rating_ok && (rules.region != AttributeRule::Require || a.region == b.region)
    }

    #[test]
    fn random_joins_and_leaves_never_strand_a_fitting_pair() {
        let rules = PoolRules {
            rating_tolerance: Some(100),
            region: AttributeRule::Require,
            rematch_window_ms: 0,
            ..PoolRules::default()
        };
        for seed in 0..100u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut m = Matcher::new(rules.clone());
            let mut waiting: HashSet<String> = HashSet::new();
            let mut all: Vec<Candidate> = Vec::new();
            for step in 0..400u64 {
                if !waiting.is_empty() && rng.gen_bool(0.2) {
                    let pick = waiting.iter().nth(rng.gen_range(0..waiting.len())).cloned().unwrap();
                    assert!(m.leave(&UserId::parse(&pick).unwrap()), "seed {seed} step {step}");
                    waiting.remove(&pick);
                    continue;
                }
                let c = Candidate {
                    user: UserId::parse(&format!("u{step}")).unwrap(),
                    rating: Some(rng.gen_range(1000..1600)),
                    region: Some(["eu", "us"][rng.gen_range(0..2)].to_string()),
                    tags: Vec::new(),
                    joined_ms: step,
                };
                all.push(c.clone());
                match m.join(c.clone(), step) {
                    JoinOutcome::Paired { partner, joiner } => {
                        assert!(
                            waiting.remove(partner.user.as_str()),
                            "seed {seed} step {step}: partner was not waiting"
                        );
                        assert_eq!(joiner.user, c.user);
                        assert!(fits(&rules, &partner, &joiner), "seed {seed} step {step}: an unfit pair");
                    }
                    JoinOutcome::Queued { .. } => {
                        waiting.insert(c.user.to_string());
                    }
                    JoinOutcome::AlreadyWaiting { .. } => panic!("seed {seed} step {step}: a new user was waiting"),
                }
                assert_eq!(m.waiting(), waiting.len(), "seed {seed} step {step}");
                let still: Vec<&Candidate> = all.iter().filter(|c| waiting.contains(c.user.as_str())).collect();
                for (i, a) in still.iter().enumerate() {
                    for b in &still[i + 1..] {
                        assert!(
                            !fits(&rules, a, b),
                            "seed {seed} step {step}: {} and {} fit but both wait",
                            a.user,
                            b.user
                        );
                    }
                }
            }
        }
    }
}
