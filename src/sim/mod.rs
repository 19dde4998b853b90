//! A deterministic simulation of the swipe protocol across nodes, with faults.
//!
//! Single-threaded and seeded: one event queue in simulated milliseconds, one random generator.
//! It drives the real pure cores (`PairState` decides, `Outbox` releases owed effects, `EventLog`
//! numbers and de-duplicates a user's events, `owed_for` builds the owed entries, `Ownership`
//! assigns slots) inside shells that follow the pair and user shards' Redis-mode rules: one batch
//! in flight, answers after commit, a failed batch drops the cache, loads from before a drop are
//! discarded, tenures claim their slots by view epoch. Around them: a store with the fenced
//! batch script's semantics (`store.rs`), messages between owners delayed, reordered, duplicated
//! and lost, batches whose reply is lost (applied or not), nodes killed (memory lost) and
//! restarted, paused past their lease, views learned late, clients that retry with the same
//! swipe ids and streams that reconnect and resume. `check.rs` judges the whole history.
//! `places.rs` runs the queue-place protocol on the same seed: users moving between owners while
//! they join, leave and are paired, with calls reordered and replies lost.

mod check;
mod node;
pub mod places;
mod store;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::ownership::{Member, Ownership};
use crate::coord::slot::{user_slot, PairKey};
use crate::protocol::{MatchId, SwipeId, UserId};
pub use check::History;
use node::{Node, PairMsg, UserMsg};
use store::Store;

/// How long a node's membership lasts without a heartbeat (simulated ms).
const LEASE_MS: u64 = 1_000;
/// A client gives up waiting for an answer after this long and retries.
const CLIENT_TIMEOUT_MS: u64 = 1_500;
/// Users of the queue-place simulation (`places`), which runs on every seed too.
const PLACE_USERS: usize = 8;
/// How long the run goes on, fault-free, after the last operation, so everything owed arrives.
const SETTLE_MS: u64 = 30_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Client operations per seed.
    pub ops: u64,
    pub nodes: usize,
    pub users: usize,
    /// Faults on (crashes, pauses, lost messages, store failures).
    pub faults: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { ops: 10_000, nodes: 3, users: 12, faults: true }
    }
}

/// What one seed did.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub ops: u64,
    pub matches: usize,
    pub events: usize,
    pub violations: Vec<String>,
}

/// Something that happens at a simulated time.
#[derive(Debug, Clone)]
pub(crate) enum Ev {
    /// The next client operation.
    Client,
    /// A request reaches a node (the client's retry counter identifies the attempt).
    Request {
        node: usize,
        req: u64,
        attempt: u32,
        forwarded: bool,
    },
    /// An answer reaches the client.
    Answer {
        req: u64,
        attempt: u32,
        answer: node::Answer,
    },
    /// The client stops waiting for attempt `attempt` of `req`.
    Timeout {
        req: u64,
        attempt: u32,
    },
    Pair {
        node: usize,
        inc: u64,
        msg: PairMsg,
    },
    User {
        node: usize,
        inc: u64,
        msg: UserMsg,
    },
    Tick {
        node: usize,
        inc: u64,
    },
    /// Membership changed: every live node learns view `epoch` at its own moment.
    Learn {
        node: usize,
        inc: u64,
        epoch: u64,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Pause {
        node: usize,
        ms: u64,
    },
    Wake {
        node: usize,
    },
    /// A batch or claim reaches the store.
    Store(node::StoreOp),
    /// A member's entry expired (its node is dead or paused).
    Expire {
        node: usize,
        inc: u64,
    },
    Connect {
        user: usize,
    },
}

/// A client request and where it stands.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub user: UserId,
    pub action: node::Action,
    pub attempt: u32,
    pub done: bool,
}

/// The simulated world.
pub(crate) struct World {
    pub now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: BTreeMap<usize, Ev>,
    next_event: usize,
    pub rng: StdRng,
    pub store: Store,
    pub nodes: Vec<Node>,
    /// Live members (by index) and the epoch naming that list.
    pub members: Vec<usize>,
    pub epoch: u64,
    pub views: BTreeMap<u64, Arc<Ownership>>,
    pub users: Vec<UserId>,
    /// Every slot the simulation uses (users' and pairs').
    pub slots: Vec<u16>,
    pub requests: Vec<Request>,
    pub history: History,
    pub faults: bool,
    pub ids: u64,
}

impl World {
    pub fn at(&mut self, delay: u64, ev: Ev) {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, ev);
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq, id)));
    }

    /// A message between nodes: delayed, and with faults sometimes lost or duplicated.
    pub fn send(&mut self, ev: Ev) {
        let delay = self.rng.gen_range(1..20);
        if self.faults && self.rng.gen_bool(0.02) {
            return;
        }
        if self.faults && self.rng.gen_bool(0.02) {
            let again = self.rng.gen_range(1..400);
            self.at(again, ev.clone());
        }
        self.at(delay, ev);
    }

    /// A fresh match id in `slot` (deterministic, unlike the server's random ones).
    pub fn match_id(&mut self, slot: u16) -> MatchId {
        self.ids += 1;
        MatchId::parse(&format!("{slot}.{:032x}", self.ids)).unwrap_or_else(|_| MatchId::new_in_slot(slot))
    }

    pub fn view(&self, epoch: u64) -> Option<&Ownership> {
        self.views.get(&epoch).map(|o| o.as_ref())
    }

    /// Membership changed: a new epoch, learned by every live node after a while.
    fn change_view(&mut self) {
        self.epoch += 1;
        self.views.insert(self.epoch, ownership(&self.members));
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive {
                let lag = self.rng.gen_range(1..300);
                let (inc, epoch) = (self.nodes[i].inc, self.epoch);
                self.at(lag, Ev::Learn { node: i, inc, epoch });
            }
        }
    }

    /// The node that owns `slot` in view `epoch`.
    pub fn owner(&self, epoch: u64, slot: u16) -> Option<usize> {
        let m = self.view(epoch)?.owner(slot)?;
        m.id.strip_prefix('n')?.parse().ok()
    }

    fn pick_pair(&mut self) -> (usize, usize) {
        let n = self.users.len();
        // Neighbours on a ring, so every user has two partners and pairs contend for users.
        let a = self.rng.gen_range(0..n);
        let b = (a + 1 + self.rng.gen_range(0..2)) % n;
        if self.rng.gen_bool(0.5) {
            (a, b)
        } else {
            (b, a)
        }
    }

    fn client_op(&mut self) {
        let (a, b) = self.pick_pair();
        let (user, other) = (self.users[a].clone(), self.users[b].clone());
        let key = PairKey::new(&user, &other);
        let active = key.as_ref().and_then(|k| self.history.active_seen(k));
        let roll = self.rng.gen_range(0..100);
        let action = match active {
            Some(m) if roll < 30 => node::Action::Unmatch { match_id: m },
            _ if roll < 8 => node::Action::Swipe { to: other, right: false, swipe_id: self.swipe_id() },
            _ => node::Action::Swipe { to: other, right: true, swipe_id: self.swipe_id() },
        };
        let req = self.requests.len() as u64;
        self.requests.push(Request { user, action, attempt: 0, done: false });
        self.submit(req);
        // Sometimes a client sends the same request twice at once (a double tap, a retry racing).
        if self.rng.gen_bool(0.05) {
            let node = self.entry_node();
            let delay = self.rng.gen_range(0..5);
            self.at(delay, Ev::Request { node, req, attempt: 1, forwarded: false });
        }
    }

    fn swipe_id(&mut self) -> SwipeId {
        self.ids += 1;
        SwipeId::parse(&format!("s{}", self.ids)).unwrap_or_else(|_| unreachable!("a valid swipe id"))
    }

    /// The node a client's request enters at (the load balancer picks a live one).
    fn entry_node(&mut self) -> usize {
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].alive).collect();
        if live.is_empty() {
            return 0;
        }
        live[self.rng.gen_range(0..live.len())]
    }

    fn submit(&mut self, req: u64) {
        let r = &mut self.requests[req as usize];
        r.attempt += 1;
        let attempt = r.attempt;
        let node = self.entry_node();
        let delay = self.rng.gen_range(1..10);
        self.at(delay, Ev::Request { node, req, attempt, forwarded: false });
        self.at(CLIENT_TIMEOUT_MS, Ev::Timeout { req, attempt });
    }

    fn fault(&mut self) {
        let n = self.nodes.len();
        let i = self.rng.gen_range(0..n);
        match self.rng.gen_range(0..3) {
            0 if self.nodes[i].alive && self.members.len() > 1 => self.at(0, Ev::Crash { node: i }),
            1 if self.nodes[i].alive && self.members.len() > 1 => {
                let ms = self.rng.gen_range(LEASE_MS / 2..LEASE_MS * 3);
                self.at(0, Ev::Pause { node: i, ms });
            }
            _ => {
                let user = self.rng.gen_range(0..self.users.len());
                self.at(0, Ev::Connect { user });
            }
        }
    }

    fn run_event(&mut self, ev: Ev) {
        match ev {
            Ev::Client => self.client_op(),
            Ev::Request { node, req, attempt, forwarded } => {
                if self.requests[req as usize].done {
                    return;
                }
                node::request(self, node, req, attempt, forwarded);
            }
            Ev::Answer { req, attempt, answer } => {
                let r = &mut self.requests[req as usize];
                // Only the attempt the client still waits for is heard (an older one timed out).
                if r.done || r.attempt != attempt {
                    return;
                }
                match answer {
                    node::Answer::Retry => {
                        // 503 or "not owner": try again soon, as a new attempt.
                        let delay = self.rng.gen_range(20..200);
                        r.attempt += 1;
                        let attempt = r.attempt;
                        let node = self.entry_node();
                        self.at(delay, Ev::Request { node, req, attempt, forwarded: false });
                        self.at(delay + CLIENT_TIMEOUT_MS, Ev::Timeout { req, attempt });
                    }
                    answer => {
                        let (user, action) = (r.user.clone(), r.action.clone());
                        r.done = true;
                        let now = self.now;
                        let store = &self.store;
                        self.history.answered(now, &user, &action, &answer, store);
                    }
                }
            }
            Ev::Timeout { req, attempt } => {
                let r = &self.requests[req as usize];
                if !r.done && r.attempt == attempt {
                    self.submit(req);
                }
            }
            Ev::Pair { node, inc, msg } => node::pair_message(self, node, inc, msg),
            Ev::User { node, inc, msg } => node::user_message(self, node, inc, msg),
            Ev::Tick { node, inc } => node::tick(self, node, inc),
            Ev::Learn { node, inc, epoch } => node::learn(self, node, inc, epoch),
            Ev::Crash { node } => {
                node::crash(self, node);
                let inc = self.nodes[node].inc;
                self.at(LEASE_MS, Ev::Expire { node, inc });
                let back = self.rng.gen_range(LEASE_MS..LEASE_MS * 4);
                self.at(back, Ev::Restart { node });
            }
            Ev::Expire { node, inc } => {
                let n = &self.nodes[node];
                // Still dead (or still paused in the same tenure): its entry is gone.
                if n.inc == inc && (!n.alive || n.paused_until > self.now) && self.members.contains(&node) {
                    self.members.retain(|&m| m != node);
                    self.change_view();
                }
            }
            Ev::Restart { node } => {
                if !self.nodes[node].alive {
                    node::start(self, node);
                    if !self.members.contains(&node) {
                        self.members.push(node);
                        self.members.sort();
                    }
                    self.change_view();
                }
            }
            Ev::Pause { node, ms } => {
                if self.nodes[node].alive {
                    self.nodes[node].paused_until = self.now + ms;
                    let inc = self.nodes[node].inc;
                    self.at(LEASE_MS, Ev::Expire { node, inc });
                    // Woken: if it was dropped, it rejoins with a new tenure.
                    self.at(ms + 1, Ev::Wake { node });
                }
            }
            Ev::Connect { user } => node::connect(self, user),
            Ev::Wake { node } => self.wake(node),
            Ev::Store(op) => node::store_op(self, op),
        }
    }

    /// Runs until the queue is empty or `until` passes.
    fn run_until(&mut self, until: u64) {
        while let Some(Reverse((t, _, id))) = self.queue.peek().copied() {
            if t > until {
                break;
            }
            self.queue.pop();
            let Some(ev) = self.events.remove(&id) else { continue };
            self.now = t;
            // A paused node handles nothing until it wakes: its events wait.
            if let Some(node) = ev_node(&ev) {
                if self.nodes[node].paused_until > t {
                    let wait = self.nodes[node].paused_until - t;
                    self.at(wait, ev);
                    continue;
                }
            }
            self.run_event(ev);
        }
        self.now = self.now.max(until);
    }

    /// A paused node wakes. Dropped from the members meanwhile, it starts a new tenure (new token,
    /// caches dropped, streams closed) and rejoins; otherwise it simply goes on.
    fn wake(&mut self, node: usize) {
        if !self.nodes[node].alive {
            return;
        }
        if !self.members.contains(&node) {
            node::new_tenure(self, node);
            self.members.push(node);
            self.members.sort();
            self.change_view();
        }
    }
}

/// The slot table for a member list (the real rendezvous table, computed once per list).
fn ownership(members: &[usize]) -> Arc<Ownership> {
    static TABLES: Mutex<BTreeMap<Vec<usize>, Arc<Ownership>>> = Mutex::new(BTreeMap::new());
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let table = tables.entry(members.to_vec()).or_insert_with(|| {
        let members =
            members.iter().map(|&i| Member { id: format!("n{i}").into(), url: format!("sim://{i}").into() }).collect();
        Arc::new(Ownership::new(members))
    });
    table.clone()
}

fn ev_node(ev: &Ev) -> Option<usize> {
    match ev {
        Ev::Request { node, .. }
        | Ev::Pair { node, .. }
        | Ev::User { node, .. }
        | Ev::Tick { node, .. }
        | Ev::Learn { node, .. } => Some(*node),
        _ => None,
    }
}

/// Runs one seed.
pub fn run(seed: u64, options: &Options) -> Outcome {
    let users: Vec<UserId> =
        (0..options.users).map(|i| UserId::parse(&format!("u{i}")).unwrap_or_else(|_| unreachable!())).collect();
    let mut slots: Vec<u16> = users.iter().map(user_slot).collect();
    for a in &users {
        for b in &users {
            if let Some(k) = PairKey::new(a, b) {
                slots.push(k.slot());
            }
        }
    }
    slots.sort();
    slots.dedup();
    let mut world = World {
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        events: BTreeMap::new(),
        next_event: 0,
        rng: StdRng::seed_from_u64(seed),
        store: Store::default(),
        nodes: (0..options.nodes).map(|_| Node::default()).collect(),
        members: Vec::new(),
        epoch: 0,
        views: BTreeMap::new(),
        users,
        slots,
        requests: Vec::new(),
        history: History::default(),
        faults: options.faults,
        ids: 0,
    };
    for i in 0..options.nodes {
        node::start(&mut world, i);
        world.members.push(i);
    }
    world.change_view();
    for u in 0..options.users {
        world.at(400, Ev::Connect { user: u });
    }
    world.run_until(500);
    for _ in 0..options.ops {
        world.at(0, Ev::Client);
        if options.faults && world.rng.gen_bool(0.002) {
            world.fault();
        }
        let step = world.rng.gen_range(0..4);
        let until = world.now + step;
        world.run_until(until);
    }
    // Faults stop; every node comes back; everything owed must arrive.
    world.faults = false;
    world.run_until(world.now + LEASE_MS * 5);
    for i in 0..options.nodes {
        if !world.nodes[i].alive {
            world.at(0, Ev::Restart { node: i });
        }
        world.nodes[i].paused_until = 0;
    }
    for u in 0..options.users {
        world.at(LEASE_MS * 2, Ev::Connect { user: u });
    }
    world.run_until(world.now + SETTLE_MS);
    let mut violations = world.history.check_final(&world.store, &world.users, &world.nodes);
    // Queue places under moves of their users' owners, on the same seed.
    let places = places::run(seed, options.ops, PLACE_USERS, options.faults);
    violations.extend(places.violations.into_iter().map(|v| format!("places: {v}")));
    Outcome {
        seed,
        ops: options.ops,
        matches: world.store.created.len(),
        events: world.store.streams.values().map(Vec::len).sum(),
        violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_with_faults_keeps_every_invariant_and_does_real_work() {
        let options = Options { ops: 3_000, ..Options::default() };
        for seed in 1..=5 {
            let out = run(seed, &options);
            assert!(out.violations.is_empty(), "seed {seed}: {:?}", out.violations);
            assert!(out.matches > 20 && out.events > 3 * out.matches, "seed {seed} did little: {out:?}");
        }
    }

    #[test]
    fn a_seed_replays_exactly() {
        let options = Options { ops: 2_000, ..Options::default() };
        let (a, b) = (run(7, &options), run(7, &options));
        assert_eq!((a.matches, a.events, a.violations), (b.matches, b.events, b.violations));
    }
}
