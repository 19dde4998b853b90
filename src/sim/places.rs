//! Queue places while their users' owners change: a seeded simulation of the place protocol.
//!
//! It drives the real pure rules of `queue::place` (`PoolCalls` on the user's side, `LineOrder`
//! and `PlaceSeq` on the pool's) inside shells that follow the user shard and the pool coordinator:
//! a join stores the place, then enqueues; a leave waits for unanswered enqueues, then dequeues; an
//! answer goes only to the owner that asked; the pool pairs two waiting users into a room whose
//! members hear of it (and of its close, with or without a requeue) at their owner of that moment.
//! Around them: calls between owners and the pool delayed and reordered, replies lost (the caller
//! sees "outcome unknown"), and users moving to a new owner at any moment (a new load generation,
//! the place read from the store, the old owner's writes fenced and its calls still on their way).
//!
//! Checked over the whole run: a room only ever reaches a member whose place is in its pool's line
//! (a user who left, or whose join never happened, is never put in a room), and at the end, once
//! everyone left and every room closed, every line is empty and every place idle (I4).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::protocol::UserId;
use crate::queue::place::{LineOrder, PlaceSeq, PoolCalls};

const POOLS: usize = 2;
/// How long a pool remembers a pairing (as `RECENT_PAIRING_MS` in the pool).
const RECENT_MS: u64 = 30_000;

/// A user's place as the shell keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spot {
    Idle,
    Queued(usize),
    InRoom(u64),
}

/// A leave held behind an unanswered enqueue (nothing to carry: it reads the place when it runs).
struct HeldLeave;

/// One owner's copy of a user (their load generation names it).
struct Owner {
    generation: u64,
    writes: u64,
    spot: Spot,
    calls: PoolCalls<HeldLeave>,
}

#[derive(Debug, Clone)]
enum Call {
    /// `after_room`: a requeue after a room of this pool closed.
    Enqueue {
        pool: usize,
        seq: PlaceSeq,
        after_room: bool,
    },
    Dequeue {
        pool: usize,
        seq: PlaceSeq,
    },
}

#[derive(Debug, Clone, Copy)]
enum Reply {
    Queued,
    Matched,
    Removed,
    NotWaiting,
    Paired,
    /// Refused (a stale call) or no answer at all: the outcome is not known to the caller.
    Unknown,
}

#[derive(Debug, Clone)]
enum Ev {
    Client(usize),
    /// A write of the user's stored place by the owner of `generation` (its `n`-th: an owner's
    /// writes land in order, one batch after another).
    Store {
        user: usize,
        generation: u64,
        n: u64,
        spot: Spot,
    },
    /// The place write of a join is stored: the enqueue (decided with `seq`) goes out.
    SendEnqueue {
        user: usize,
        generation: u64,
        pool: usize,
        seq: PlaceSeq,
        after_room: bool,
    },
    AtPool {
        user: usize,
        from: u64,
        call: Call,
    },
    Answer {
        user: usize,
        to: u64,
        call: Call,
        reply: Reply,
    },
    /// The room's owner tells the user's owner of that moment (reliable: its outbox re-sends).
    Enter {
        user: usize,
        room: u64,
        pool: usize,
    },
    Close {
        room: u64,
    },
    Leave {
        user: usize,
        room: u64,
        requeue: bool,
        pool: usize,
    },
    Move(usize),
}

struct World {
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    rng: StdRng,
    users: Vec<UserId>,
    owners: Vec<Owner>,
    /// Per user: the stored place and the load counter (`placegen`).
    stored: Vec<(Spot, u64)>,
    /// Per user: the last write of the current owner that landed.
    landed: Vec<u64>,
    lines: Vec<BTreeSet<usize>>,
    orders: Vec<LineOrder>,
    /// Per pool: the users it paired and when, until they enqueue again, their room closes without
    /// a requeue, or `RECENT_MS` pass (the pool's recent pairings, so a leave racing the room's
    /// hand-off hears of the room).
    recent: Vec<BTreeMap<usize, u64>>,
    rooms: BTreeMap<u64, (usize, [usize; 2], bool)>,
    next_room: u64,
    faults: bool,
    violations: Vec<String>,
}

impl World {
    fn at(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((self.now + delay, self.seq)));
    }

    fn delay(&mut self) -> u64 {
        self.rng.gen_range(1..40)
    }

    /// Sets the place with a room event: stored with the event in the user's log (a lost commit is
    /// a re-delivery from the room's outbox, which the model folds into one reliable delivery).
    fn set_spot_logged(&mut self, user: usize, spot: Spot) {
        self.owners[user].spot = spot;
        self.stored[user].0 = spot;
        self.owners[user].writes += 1;
        self.landed[user] = self.owners[user].writes;
    }

    /// Sets the place at the user's current owner and writes it (fenced by generation).
    fn set_spot(&mut self, user: usize, spot: Spot) {
        self.owners[user].spot = spot;
        self.write(user, spot);
    }

    /// Writes `spot` for the user's current owner; returns when it lands.
    fn write(&mut self, user: usize, spot: Spot) -> u64 {
        let o = &mut self.owners[user];
        o.writes += 1;
        let (generation, n) = (o.generation, o.writes);
        let d = self.delay();
        self.at(d, Ev::Store { user, generation, n, spot });
        d
    }

    fn send(&mut self, user: usize, call: Call) {
        let from = self.owners[user].generation;
        let d = self.delay();
        self.at(d, Ev::AtPool { user, from, call });
    }

    /// Decides an enqueue now (leaves from here on wait for it) and sends it once `delay` has
    /// stored the place it goes with.
    fn enqueue_after(&mut self, user: usize, pool: usize, delay: u64, after_room: bool) {
        let o = &mut self.owners[user];
        o.calls.enqueue_sent();
        let seq = o.calls.next_seq();
        let generation = o.generation;
        self.at(delay, Ev::SendEnqueue { user, generation, pool, seq, after_room });
    }

    fn leave(&mut self, user: usize) {
        let Spot::Queued(pool) = self.owners[user].spot else { return };
        if self.owners[user].calls.leave(HeldLeave).is_none() {
            return; // held: run by the last enqueue's answer
        }
        let seq = self.owners[user].calls.next_seq();
        self.send(user, Call::Dequeue { pool, seq });
    }

    fn client(&mut self, user: usize) {
        match (self.owners[user].spot, self.rng.gen_range(0..3)) {
            (Spot::Idle, 0 | 1) => {
                let pool = self.rng.gen_range(0..POOLS);
                // Stored first: a new owner must see the place of any call the user sent.
                self.owners[user].spot = Spot::Queued(pool);
                let d = self.write(user, Spot::Queued(pool));
                self.enqueue_after(user, pool, d, false);
            }
            (Spot::Queued(_), _) => self.leave(user),
            _ => {}
        }
    }

    fn at_pool(&mut self, user: usize, from: u64, call: Call) {
        let now = self.now;
        let reply = match &call {
            Call::Enqueue { pool, seq, after_room } => {
                // The room's close is a fact whoever sent this: forgotten even if the call is stale.
                if *after_room {
                    self.recent[*pool].remove(&user);
                }
                let admitted = self.orders[*pool].admit_enqueue(&self.users[user], *seq);
                if admitted {
                    self.recent[*pool].remove(&user);
                }
                if !admitted {
                    Reply::Unknown
                } else if self.lines[*pool].contains(&user) {
                    Reply::Queued
                } else if let Some(&partner) = self.lines[*pool].iter().next() {
                    self.lines[*pool].remove(&partner);
                    self.open_room(*pool, [partner, user]);
                    Reply::Matched
                } else {
                    self.lines[*pool].insert(user);
                    Reply::Queued
                }
            }
            Call::Dequeue { pool, seq } => {
                if !self.orders[*pool].admit_dequeue(&self.users[user], *seq, now) {
                    Reply::Unknown
                } else if self.lines[*pool].remove(&user) {
                    Reply::Removed
                } else if self.recent[*pool].get(&user).is_some_and(|t| now < t + RECENT_MS) {
                    Reply::Paired
                } else {
                    Reply::NotWaiting
                }
            }
        };
        let lost = self.faults && self.rng.gen_bool(0.03);
        let reply = if lost { Reply::Unknown } else { reply };
        let d = self.delay();
        self.at(d, Ev::Answer { user, to: from, call, reply });
    }

    fn open_room(&mut self, pool: usize, members: [usize; 2]) {
        self.next_room += 1;
        let room = self.next_room;
        for m in members {
            self.orders[pool].paired(&self.users[m], self.now);
            self.recent[pool].insert(m, self.now);
            let d = self.delay();
            self.at(d, Ev::Enter { user: m, room, pool });
        }
        self.rooms.insert(room, (pool, members, true));
        // After both members heard of it (the room's events reach a member in order).
        let close = self.rng.gen_range(50..250);
        self.at(close, Ev::Close { room });
    }

    fn answer(&mut self, user: usize, to: u64, call: Call, reply: Reply) {
        if self.owners[user].generation != to {
            return; // the owner that asked is gone
        }
        match call {
            Call::Enqueue { .. } => {
                // Whatever the reply (an unknown outcome keeps the place: a later leave asks the
                // pool what is true), the leaves held behind it run now.
                let _ = reply;
                for _ in self.owners[user].calls.enqueue_answered() {
                    self.leave(user);
                }
            }
            Call::Dequeue { pool, seq } => {
                let latest = self.owners[user].calls.is_latest(seq);
                let out = matches!(reply, Reply::Removed | Reply::NotWaiting);
                if out && latest && self.owners[user].spot == Spot::Queued(pool) {
                    self.set_spot(user, Spot::Idle);
                }
            }
        }
    }

    fn enter(&mut self, user: usize, room: u64, pool: usize) {
        let spot = self.owners[user].spot;
        match spot {
            Spot::Queued(p) if p == pool => self.set_spot_logged(user, Spot::InRoom(room)),
            Spot::InRoom(r) if r == room => {}
            _ => {
                self.violations.push(format!(
                    "{} was put in room {room} of pool {pool} while its place was {spot:?}",
                    self.users[user]
                ));
                self.set_spot_logged(user, Spot::InRoom(room));
            }
        }
    }

    fn close(&mut self, room: u64) {
        let Some((pool, members, open)) = self.rooms.get_mut(&room) else { return };
        if !*open {
            return;
        }
        *open = false;
        let (pool, members) = (*pool, *members);
        for m in members {
            let requeue = self.faults && self.rng.gen_bool(0.5);
            let d = self.delay();
            self.at(d, Ev::Leave { user: m, room, requeue, pool });
        }
    }

    fn leave_room(&mut self, user: usize, room: u64, requeue: bool, pool: usize) {
        if self.owners[user].spot != Spot::InRoom(room) {
            return;
        }
        if requeue {
            // The place is stored with the room's close event, then the enqueue goes out.
            self.set_spot_logged(user, Spot::Queued(pool));
            self.enqueue_after(user, pool, 0, true);
        } else {
            self.set_spot_logged(user, Spot::Idle);
            // `Forget`: the pool stops answering with the closed room.
            self.recent[pool].remove(&user);
        }
    }

    fn move_user(&mut self, user: usize) {
        let (spot, generation) = &mut self.stored[user];
        *generation += 1;
        let mut calls = PoolCalls::default();
        calls.loaded(*generation);
        self.owners[user] = Owner { generation: *generation, writes: 0, spot: *spot, calls };
        self.landed[user] = 0;
    }

    fn run_event(&mut self, ev: Ev) {
        match ev {
            Ev::Client(u) => self.client(u),
            Ev::Store { user, generation, n, spot } => {
                // Fenced: only the owner of the latest load writes, each write after the last.
                if self.stored[user].1 == generation && n > self.landed[user] {
                    self.stored[user].0 = spot;
                    self.landed[user] = n;
                }
            }
            Ev::SendEnqueue { user, generation, pool, seq, after_room } => {
                // Sent once its place write is stored, and only by an owner still in charge (a
                // leave waits for it, so the place is still this line).
                if self.owners[user].generation == generation {
                    self.send(user, Call::Enqueue { pool, seq, after_room });
                }
            }
            Ev::AtPool { user, from, call } => self.at_pool(user, from, call),
            Ev::Answer { user, to, call, reply } => self.answer(user, to, call, reply),
            Ev::Enter { user, room, pool } => self.enter(user, room, pool),
            Ev::Close { room } => self.close(room),
            Ev::Leave { user, room, requeue, pool } => self.leave_room(user, room, requeue, pool),
            Ev::Move(u) => self.move_user(u),
        }
    }

    fn run_until(&mut self, until: u64) {
        while let Some(Reverse((t, seq))) = self.queue.peek().copied() {
            if t > until {
                break;
            }
            self.queue.pop();
            self.now = t;
            if let Some(ev) = self.events.remove(&seq) {
                self.run_event(ev);
            }
        }
        self.now = until;
    }
}

/// What one seed did: client operations, rooms made, and what went wrong.
#[derive(Debug)]
pub struct Outcome {
    pub rooms: u64,
    pub violations: Vec<String>,
}

/// One seeded run of `ops` client operations over `users` users.
pub fn run(seed: u64, ops: u64, users: usize, faults: bool) -> Outcome {
    let ids: Vec<UserId> =
        (0..users).map(|i| UserId::parse(&format!("q{i}")).unwrap_or_else(|_| unreachable!())).collect();
    let mut w = World {
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        events: BTreeMap::new(),
        rng: StdRng::seed_from_u64(seed),
        users: ids,
        owners: (0..users)
            .map(|_| Owner { generation: 0, writes: 0, spot: Spot::Idle, calls: PoolCalls::default() })
            .collect(),
        stored: vec![(Spot::Idle, 0); users],
        landed: vec![0; users],
        lines: vec![BTreeSet::new(); POOLS],
        orders: (0..POOLS).map(|_| LineOrder::default()).collect(),
        recent: vec![BTreeMap::new(); POOLS],
        rooms: BTreeMap::new(),
        next_room: 0,
        faults,
        violations: Vec::new(),
    };
    for u in 0..users {
        w.move_user(u);
    }
    for _ in 0..ops {
        let u = w.rng.gen_range(0..users);
        w.at(0, Ev::Client(u));
        if faults && w.rng.gen_bool(0.05) {
            let m = w.rng.gen_range(0..users);
            let d = w.rng.gen_range(0..30);
            w.at(d, Ev::Move(m));
        }
        let step = w.rng.gen_range(0..6);
        w.run_until(w.now + step);
    }
    // Settle: no more faults; every room closes without requeue and everyone leaves, until quiet.
    w.faults = false;
    for _ in 0..40 {
        w.run_until(w.now + 1_000);
        let open: Vec<u64> = w.rooms.iter().filter(|(_, (_, _, open))| *open).map(|(r, _)| *r).collect();
        for r in open {
            w.close(r);
        }
        for u in 0..users {
            w.leave(u);
        }
    }
    w.run_until(w.now + 1_000);
    for (p, line) in w.lines.iter().enumerate() {
        for u in line {
            w.violations.push(format!("{} is still in line {p} after everyone left", w.users[*u]));
        }
    }
    for (u, o) in w.owners.iter().enumerate() {
        if o.spot != Spot::Idle {
            w.violations.push(format!("{}'s place is {:?} after everyone left", w.users[u], o.spot));
        }
    }
    Outcome { rooms: w.next_room, violations: w.violations }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_stay_true_while_their_users_move_and_replies_are_lost() {
        for seed in 1..=20 {
            let out = run(seed, 5_000, 8, true);
            assert!(out.violations.is_empty(), "seed {seed}: {:?}", out.violations);
            assert!(out.rooms > 100, "seed {seed} made few rooms: {out:?}");
        }
    }
}
