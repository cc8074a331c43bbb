//! A seeded, deterministic simulation of one consumer group against the coordinator.
//!
//! Why: the unit tests walk the rebalance protocol one scripted path at a time; real groups
//! interleave joins, syncs, heartbeats, commits, leaves, crashes, long pauses and static
//! restarts in every order. Here a driver plays a handful of consumers (half of them static
//! members) the way Kafka's Java client behaves, with random delays, against one
//! [`GroupCoordinator`] on tokio's paused clock, and checks what Kafka guarantees after every
//! request and every coordinator tick:
//!
//! - the generation only grows, and one generation has one leader, one protocol and one
//!   assignment: every member that syncs gets the leader's assignment for it;
//! - in a stable group every partition is owned by exactly one member, and consumers that hold
//!   an assignment of the current generation never overlap;
//! - Heartbeat, OffsetCommit and LeaveGroup answer what Kafka's coordinator answers for the
//!   group's state at that instant (stale generations get ILLEGAL_GENERATION, fenced static
//!   members FENCED_INSTANCE_ID, departed ones UNKNOWN_MEMBER_ID); a commit is accepted only
//!   from a member of the current generation outside CompletingRebalance;
//! - a member that stops heartbeating is removed once its session timeout has passed, and not
//!   before (unless it leaves, is replaced by its static successor, or a rebalance it did not
//!   rejoin completes at its deadline); a member waiting in a join is never dropped;
//! - a consumer that keeps heartbeating and rejoins promptly never loses its membership;
//! - no join waits past the rebalance timeout, no sync past the session timeout, and no
//!   rebalance lasts past its deadline;
//! - once the chaos stops, the group settles: Stable, with exactly the running consumers, all
//!   in the current generation with the leader's assignment.
//!
//! Determinism: the driver is one task that owns every consumer; requests are futures it polls
//! itself (no spawned tasks, no `select!`), time moves only by `tokio::time::advance`, every
//! choice comes from one SplitMix64 seeded per run, and member ids (which carry a random uuid)
//! are logged by the consumer incarnation they belong to. The same seed gives the same event
//! log, which a test checks. A failure prints the seed, the broken rule and the log's tail.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use tokio::time::Instant;

use super::super::*;
use super::{HEARTBEAT_INTERVAL, REBALANCE_TIMEOUT, SESSION_TIMEOUT, TICK};

use crate::sim_rng::SplitMix64;

const GROUP: &str = "g";
const PARTITIONS: u32 = 12;
const CONSUMERS: usize = 5;
const SEEDS: u64 = 50;
/// How long consumers come, go, crash and pause.
const CHAOS: Duration = Duration::from_secs(240);
/// Chance (in per mille) that a tick of the chaos phase brings a disruption.
const CHAOS_PER_MILLE: u64 = 25;
const LONGEST_PAUSE: Duration = Duration::from_secs(90);
/// Time for the group to settle after the chaos: a paused consumer wakes up, a dead one's
/// session ends, a rebalance reaches its deadline.
const SETTLE: Duration = Duration::from_secs(90 + 30 + 60 + 20);
/// The longest a consumer takes to rejoin once it learned of a rebalance (its poll loop).
const LONGEST_REJOIN_DELAY: Duration = Duration::from_secs(2);

type Pending<T> = Pin<Box<dyn Future<Output = T>>>;

/// Where one consumer process is in the protocol.
enum Phase {
    /// Not running: not started yet, crashed, left, or fenced.
    Down,
    /// Will send a JoinGroup at `at` under `member_id` ("" for a new member). Meanwhile its
    /// heartbeat thread may still beat for the membership it had (`beat`): a consumer busy in
    /// its poll loop rejoins late, and past the rebalance timeout it is dropped.
    Rejoin {
        at: Instant,
        member_id: String,
        beat: Option<Membership>,
    },
    Joining {
        member_id: String,
        since: Instant,
        fut: Pending<Joined>,
    },
    Syncing {
        member_id: String,
        generation: i32,
        since: Instant,
        next_heartbeat: Instant,
        fut: Pending<Synced>,
    },
    Member(Membership),
    /// A stop-the-world pause (long GC, network partition): silent until `until`, then it
    /// carries on with the membership it had, commits and heartbeats.
    Paused {
        until: Instant,
        was: Membership,
    },
}

#[derive(Clone)]
struct Membership {
    member_id: String,
    generation: i32,
    partitions: Vec<u32>,
    next_heartbeat: Instant,
}

/// A paused process that was given up for dead and replaced by a new incarnation (a pod
/// rescheduled while the old one was partitioned away). When it wakes up it commits and
/// heartbeats once with its old identity, then learns it is fenced or gone and exits.
struct Ghost {
    until: Instant,
    was: Membership,
}

struct Consumer {
    name: String,
    instance: Option<String>,
    incarnation: u32,
    phase: Phase,
    ghost: Option<Ghost>,
    /// Heartbeats in time and rejoins promptly since its last successful join (not paused):
    /// such a consumer must never lose its membership.
    punctual: bool,
    /// The generation it last joined (-1: none under its current member id).
    generation: i32,
}

impl Consumer {
    fn client_id(&self) -> String {
        format!("{}.{}", self.name, self.incarnation)
    }
}

/// What the simulation knows of a member's last contact with the coordinator (the instant the
/// coordinator last refreshed its session, exactly: every change happens inside a call or a
/// tick the driver makes, and it observes right after).
struct Contact {
    last: Instant,
    in_join: bool,
}

/// What one generation handed out.
#[derive(Default)]
struct Generation {
    leader: Option<String>,
    protocol: Option<String>,
    listing: Option<Vec<String>>,
    assignment: Option<BTreeMap<String, Vec<u32>>>,
}

struct Sim {
    rng: SplitMix64,
    c: Arc<GroupCoordinator>,
    consumers: Vec<Consumer>,
    start: Instant,
    log: Vec<String>,
    names: HashMap<String, String>,
    name_counts: HashMap<String, usize>,
    // What the last observation saw.
    seen: Option<(GroupState, i32)>,
    members: BTreeSet<String>,
    contacts: HashMap<String, Contact>,
    preparing_since: Option<(Instant, bool)>,
    /// Members the request under way may remove (a leave, a static member's successor).
    excused: HashSet<String>,
    generations: BTreeMap<i32, Generation>,
    /// A static member's new member id → the one it replaced (it inherits the assignment).
    replaced: HashMap<String, String>,
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn encode(partitions: &[u32]) -> Bytes {
    let s: Vec<String> = partitions.iter().map(|p| p.to_string()).collect();
    Bytes::from(s.join(","))
}

fn decode(b: &Bytes) -> Vec<u32> {
    std::str::from_utf8(b)
        .expect("assignments are text")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("a partition number"))
        .collect()
}

/// What Kafka's coordinator answers a Heartbeat with, given the group as it is right now.
fn expected_heartbeat(
    d: Option<&GroupDescription>,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
) -> Option<ResponseError> {
    let Some(d) = d else {
        return Some(ResponseError::UnknownMemberId);
    };
    if fenced(d, member_id, instance) {
        return Some(ResponseError::FencedInstanceId);
    }
    if !d.members.iter().any(|m| m.member_id == member_id) {
        return Some(ResponseError::UnknownMemberId);
    }
    if generation != d.generation {
        return Some(ResponseError::IllegalGeneration);
    }
    match d.state {
        GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
        GroupState::Empty => Some(ResponseError::UnknownMemberId),
        GroupState::CompletingRebalance | GroupState::Stable => None,
    }
}

/// The answers Kafka's coordinator may give a member's OffsetCommit: accepted (`[None]`) only
/// from a current member at the current generation, not while the leader's assignment is
/// awaited.
fn expected_commit(
    d: Option<&GroupDescription>,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
) -> Vec<Option<ResponseError>> {
    let Some(d) = d else {
        return vec![Some(ResponseError::IllegalGeneration)];
    };
    let member = d.members.iter().any(|m| m.member_id == member_id);
    if fenced(d, member_id, instance) {
        return vec![Some(ResponseError::FencedInstanceId)];
    }
    if !member {
        // Kafka versions differ between the two for a departed member.
        return vec![
            Some(ResponseError::UnknownMemberId),
            Some(ResponseError::IllegalGeneration),
        ];
    }
    if generation != d.generation {
        return vec![Some(ResponseError::IllegalGeneration)];
    }
    match d.state {
        GroupState::CompletingRebalance => vec![Some(ResponseError::RebalanceInProgress)],
        _ => vec![None],
    }
}

/// The instance id now belongs to another member id.
fn fenced(d: &GroupDescription, member_id: &str, instance: Option<&str>) -> bool {
    instance.is_some_and(|i| {
        d.members
            .iter()
            .any(|m| m.group_instance_id.as_deref() == Some(i) && m.member_id != member_id)
    })
}

impl Sim {
    fn new(seed: u64) -> Self {
        let consumers = (0..CONSUMERS)
            .map(|i| Consumer {
                name: format!("c{i}"),
                instance: (i % 2 == 0).then(|| format!("pod-{i}")),
                incarnation: 0,
                phase: Phase::Down,
                ghost: None,
                punctual: true,
                generation: -1,
            })
            .collect();
        Sim {
            rng: SplitMix64(seed),
            c: Arc::new(GroupCoordinator::new(GroupConfig::default())),
            consumers,
            start: Instant::now(),
            log: Vec::new(),
            names: HashMap::new(),
            name_counts: HashMap::new(),
            seen: None,
            members: BTreeSet::new(),
            contacts: HashMap::new(),
            preparing_since: None,
            excused: HashSet::new(),
            generations: BTreeMap::new(),
            replaced: HashMap::new(),
        }
    }

    /// A stable name for a member id: its client id (consumer and incarnation) and the how
    /// manieth id of that client it is.
    fn name(&mut self, member_id: &str) -> String {
        if member_id.is_empty() {
            return "-".into();
        }
        if let Some(n) = self.names.get(member_id) {
            return n.clone();
        }
        let client = member_id
            .rsplit_once('-')
            .map_or(member_id, |(client, _)| client)
            .to_string();
        let count = self.name_counts.entry(client.clone()).or_default();
        *count += 1;
        let n = format!("{client}#{count}");
        self.names.insert(member_id.to_string(), n.clone());
        n
    }

    fn note(&mut self, who: usize, what: String) {
        let t = self.start.elapsed().as_millis();
        let who = self.consumers[who].client_id();
        self.log.push(format!("{t:>7} ms {who:<6} {what}"));
    }

    fn describe(&self) -> Option<GroupDescription> {
        self.c.describe(GROUP)
    }

    fn member_present(&self, member_id: &str) -> bool {
        self.members.contains(member_id)
    }

    fn touch(&mut self, member_id: &str, in_join: Option<bool>) {
        let now = Instant::now();
        let contact = self
            .contacts
            .entry(member_id.to_string())
            .or_insert(Contact {
                last: now,
                in_join: false,
            });
        contact.last = now;
        if let Some(j) = in_join {
            contact.in_join = j;
        }
    }

    /// The assignment the leader of `generation` gave `member_id` (or the static member it
    /// replaced).
    fn assigned(&self, generation: i32, member_id: &str) -> Option<Option<Vec<u32>>> {
        let assignment = self.generations.get(&generation)?.assignment.as_ref()?;
        let mut id = member_id;
        loop {
            if let Some(p) = assignment.get(id) {
                return Some(Some(p.clone()));
            }
            match self.replaced.get(id) {
                Some(older) => id = older,
                None => return Some(None),
            }
        }
    }

    /// Checks the coordinator's state after a call or a tick against the rules above.
    fn observe(&mut self) -> Check {
        let now = Instant::now();
        let d = self.describe();
        let current: BTreeSet<String> = d
            .iter()
            .flat_map(|d| d.members.iter().map(|m| m.member_id.clone()))
            .collect();
        let state = d.as_ref().map(|d| (d.state, d.generation));
        let excused = std::mem::take(&mut self.excused);
        let bumped = match (self.seen, state) {
            (Some((_, before)), Some((_, after))) => {
                ensure!(
                    after >= before,
                    "the generation went back from {before} to {after}"
                );
                after != before
            }
            (Some(_), None) => {
                ensure!(
                    self.members.is_empty(),
                    "a group with members was forgotten"
                );
                false
            }
            _ => false,
        };
        // Members that left the group: for a reason Kafka allows?
        for gone in self.members.difference(&current) {
            if excused.contains(gone) {
                continue;
            }
            let name = self.names.get(gone).cloned().unwrap_or(gone.clone());
            let Some(contact) = self.contacts.get(gone) else {
                return Err(format!("{name} vanished without ever being seen"));
            };
            ensure!(
                !contact.in_join,
                "{name} was dropped while waiting in a join"
            );
            let silent = now.duration_since(contact.last);
            if silent > SESSION_TIMEOUT {
                continue;
            }
            // A rebalance it did not rejoin completed: only at the rebalance's deadline.
            let deadline_passed = self.preparing_since.is_some_and(|(since, initial)| {
                let timeout = if initial {
                    GroupConfig::default().initial_rebalance_delay
                } else {
                    REBALANCE_TIMEOUT
                };
                now.duration_since(since) >= timeout
            });
            ensure!(
                bumped && deadline_passed,
                "{name} was removed {silent:?} after its last contact, before its session \
                 timeout and without leaving"
            );
        }
        for id in &current {
            if !self.members.contains(id) {
                // It just joined (the request under way), waiting for the rebalance.
                self.contacts.insert(
                    id.clone(),
                    Contact {
                        last: now,
                        in_join: true,
                    },
                );
            }
        }
        if bumped {
            // Completing a join refreshes every remaining member's session.
            for id in &current {
                self.touch(id, Some(false));
            }
        }
        for id in &current {
            let contact = &self.contacts[id];
            let silent = now.duration_since(contact.last);
            ensure!(
                contact.in_join || silent <= SESSION_TIMEOUT + TICK,
                "{} is still a member {silent:?} after its last contact",
                self.names.get(id).cloned().unwrap_or(id.clone())
            );
        }
        // Rebalances end by their deadline.
        match state {
            Some((GroupState::PreparingRebalance, _)) => {
                if bumped || !matches!(self.seen, Some((GroupState::PreparingRebalance, _))) {
                    let initial = matches!(self.seen, Some((GroupState::Empty, _)) | None);
                    self.preparing_since = Some((now, initial));
                }
                let (since, _) = self.preparing_since.expect("set above");
                ensure!(
                    now.duration_since(since) <= REBALANCE_TIMEOUT + TICK,
                    "a rebalance has been under way for {:?}",
                    now.duration_since(since)
                );
            }
            _ => self.preparing_since = None,
        }
        // A stable group: every partition owned by exactly one member, as its leader said.
        if let Some(d) = &d
            && d.state == GroupState::Stable
        {
            let mut owned: Vec<u32> = Vec::new();
            for m in &d.members {
                let p = decode(&m.assignment);
                let expected = self.assigned(d.generation, &m.member_id);
                ensure!(
                    expected == Some(Some(p.clone())),
                    "member {} holds {p:?} in generation {}, its leader assigned {expected:?}",
                    self.names
                        .get(&m.member_id)
                        .cloned()
                        .unwrap_or(m.member_id.clone()),
                    d.generation
                );
                owned.extend(p);
            }
            owned.sort_unstable();
            ensure!(
                owned == (0..PARTITIONS).collect::<Vec<u32>>(),
                "generation {} owns partitions {owned:?}",
                d.generation
            );
            // The consumers' own view: no two of the current generation overlap.
            let mut held: BTreeMap<u32, String> = BTreeMap::new();
            for consumer in &self.consumers {
                if let Phase::Member(m) = &consumer.phase
                    && m.generation == d.generation
                {
                    for p in &m.partitions {
                        if let Some(other) = held.insert(*p, consumer.client_id()) {
                            return Err(format!(
                                "{other} and {} both own partition {p} in generation {}",
                                consumer.client_id(),
                                d.generation
                            ));
                        }
                    }
                }
            }
        }
        self.members = current;
        self.seen = state;
        Ok(())
    }

    fn join_request(&self, i: usize, member_id: &str) -> Join {
        let consumer = &self.consumers[i];
        Join {
            member_id: member_id.to_string(),
            group_instance_id: consumer.instance.clone(),
            client_id: consumer.client_id(),
            client_host: "/10.0.0.1".into(),
            session_timeout: SESSION_TIMEOUT,
            rebalance_timeout: REBALANCE_TIMEOUT,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"topic"))],
            require_known_member_id: true,
        }
    }

    fn issue_join(&mut self, i: usize, member_id: String) -> Check {
        let instance = self.consumers[i].instance.clone();
        // A static member without a member id replaces its instance's current member.
        let predecessor = match (&instance, member_id.is_empty()) {
            (Some(instance), true) => self.describe().and_then(|d| {
                d.members
                    .into_iter()
                    .find(|m| m.group_instance_id.as_deref() == Some(instance))
                    .map(|m| m.member_id)
            }),
            _ => None,
        };
        if let Some(p) = &predecessor {
            self.excused.insert(p.clone());
        }
        if self.member_present(&member_id) {
            self.touch(&member_id, Some(true));
        }
        let name = self.name(&member_id);
        self.note(i, format!("join as {name}"));
        let request = self.join_request(i, &member_id);
        let c = self.c.clone();
        let mut fut: Pending<Joined> = Box::pin(async move { c.join(GROUP, request).await });
        let answer = (&mut fut).now_or_never();
        if let (Some(p), Some(Joined { error: None, .. })) = (&predecessor, &answer) {
            let successor = answer
                .as_ref()
                .map(|j| j.member_id.clone())
                .unwrap_or_default();
            self.replaced.insert(successor, p.clone());
        }
        self.observe()?;
        match answer {
            Some(joined) => self.joined(i, joined),
            None => {
                self.consumers[i].phase = Phase::Joining {
                    member_id,
                    since: Instant::now(),
                    fut,
                };
                Ok(())
            }
        }
    }

    fn joined(&mut self, i: usize, joined: Joined) -> Check {
        let name = self.name(&joined.member_id);
        let punctual = self.consumers[i].punctual;
        if let Some(c) = self.contacts.get_mut(&joined.member_id) {
            c.in_join = false;
        }
        match joined.error {
            None => {}
            Some(ResponseError::MemberIdRequired) => {
                self.note(i, format!("join: MEMBER_ID_REQUIRED, use {name}"));
                return self.issue_join(i, joined.member_id);
            }
            Some(ResponseError::UnknownMemberId) => {
                ensure!(
                    !punctual,
                    "a punctual consumer's join got UNKNOWN_MEMBER_ID"
                );
                self.note(i, "join: UNKNOWN_MEMBER_ID, rejoin as new".into());
                self.rejoin(i, String::new());
                return Ok(());
            }
            Some(ResponseError::FencedInstanceId) => {
                ensure!(!punctual, "a punctual consumer's join was fenced");
                self.note(i, "join: FENCED_INSTANCE_ID, exit".into());
                self.consumers[i].phase = Phase::Down;
                return Ok(());
            }
            Some(e) => return Err(format!("join of {name} answered {e:?}")),
        }
        let g = joined.generation;
        let leader = self.name(&joined.leader);
        self.note(
            i,
            format!("joined generation {g} as {name}, leader {leader}"),
        );
        let current = self.describe().map_or(-1, |d| d.generation);
        ensure!(
            g <= current && g > 0,
            "joined generation {g}, the group is at {current}"
        );
        let listing: Vec<String> = joined.members.iter().map(|(id, _, _)| id.clone()).collect();
        // One leader per generation (a static leader's successor takes its place).
        let leader_origin = {
            let mut id = joined.leader.clone();
            while let Some(older) = self.replaced.get(&id) {
                id = older.clone();
            }
            id
        };
        let replaced = self.replaced.contains_key(&joined.member_id);
        let record = self.generations.entry(g).or_default();
        if let Some(l) = &record.leader {
            ensure!(
                *l == leader_origin,
                "generation {g} has leaders {l} and {leader_origin}"
            );
        }
        record.leader = Some(leader_origin);
        match &record.protocol {
            Some(p) => ensure!(
                Some(p) == joined.protocol_name.as_ref(),
                "generation {g} has protocols {p} and {:?}",
                joined.protocol_name
            ),
            None => record.protocol = joined.protocol_name.clone(),
        }
        if let Some(listing) = &record.listing
            && !listing.contains(&joined.member_id)
            && !replaced
        {
            return Err(format!(
                "{name} joined generation {g} but its leader does not list it"
            ));
        }
        let is_leader = joined.leader == joined.member_id;
        ensure!(
            is_leader != joined.members.is_empty(),
            "only the leader gets the member list"
        );
        let assignments = if is_leader {
            ensure!(
                listing.contains(&joined.member_id),
                "the leader is not in its own member list"
            );
            if record.listing.is_none() {
                record.listing = Some(listing.clone());
            }
            // Round robin over the members in id order.
            let mut by_member: BTreeMap<String, Vec<u32>> =
                listing.iter().map(|id| (id.clone(), Vec::new())).collect();
            for p in 0..PARTITIONS {
                let id = &listing[p as usize % listing.len()];
                by_member.get_mut(id).expect("listed").push(p);
            }
            if record.assignment.is_none() {
                record.assignment = Some(by_member.clone());
            }
            by_member
                .iter()
                .map(|(id, p)| (id.clone(), encode(p)))
                .collect()
        } else {
            Vec::new()
        };
        self.consumers[i].punctual = true;
        self.consumers[i].generation = g;
        self.issue_sync(i, joined.member_id, g, assignments)
    }

    fn issue_sync(
        &mut self,
        i: usize,
        member_id: String,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Check {
        let instance = self.consumers[i].instance.clone();
        if self.seen == Some((GroupState::CompletingRebalance, generation))
            && self.member_present(&member_id)
        {
            self.touch(&member_id, None);
        }
        let c = self.c.clone();
        let id = member_id.clone();
        let mut fut: Pending<Synced> = Box::pin(async move {
            c.sync(
                GROUP,
                MemberRef::new(&id, instance.as_deref()),
                generation,
                assignments,
            )
            .await
        });
        let answer = (&mut fut).now_or_never();
        self.observe()?;
        match answer {
            Some(synced) => self.synced(i, member_id, generation, synced),
            None => {
                let now = Instant::now();
                self.consumers[i].phase = Phase::Syncing {
                    member_id,
                    generation,
                    since: now,
                    next_heartbeat: now + HEARTBEAT_INTERVAL,
                    fut,
                };
                Ok(())
            }
        }
    }

    fn synced(&mut self, i: usize, member_id: String, generation: i32, synced: Synced) -> Check {
        let punctual = self.consumers[i].punctual;
        match synced {
            Ok(bytes) => {
                let partitions = decode(&bytes);
                let expected = self.assigned(generation, &member_id);
                ensure!(
                    expected == Some(Some(partitions.clone())),
                    "{} got {partitions:?} in generation {generation}, its leader assigned \
                     {expected:?}",
                    self.name(&member_id)
                );
                self.note(i, format!("synced generation {generation}: {partitions:?}"));
                self.consumers[i].phase = Phase::Member(Membership {
                    member_id,
                    generation,
                    partitions,
                    next_heartbeat: Instant::now() + HEARTBEAT_INTERVAL,
                });
            }
            Err(e @ (ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration)) => {
                ensure!(
                    !punctual || e == ResponseError::RebalanceInProgress,
                    "a punctual consumer's sync got {e:?}"
                );
                self.note(i, format!("sync: {e:?}, rejoin"));
                self.rejoin(i, member_id);
            }
            Err(e) => {
                ensure!(!punctual, "a punctual consumer's sync got {e:?}");
                self.note(i, format!("sync: {e:?}"));
                self.lost(i, e);
            }
        }
        Ok(())
    }

    /// After UNKNOWN_MEMBER_ID (rejoin as a new member) or FENCED_INSTANCE_ID (exit).
    fn lost(&mut self, i: usize, e: ResponseError) {
        if e == ResponseError::FencedInstanceId {
            self.consumers[i].phase = Phase::Down;
        } else {
            self.rejoin(i, String::new());
        }
    }

    fn rejoin(&mut self, i: usize, member_id: String) {
        if member_id.is_empty() {
            self.consumers[i].generation = -1;
        }
        let at = Instant::now() + self.rng.up_to(LONGEST_REJOIN_DELAY);
        self.consumers[i].phase = Phase::Rejoin {
            at,
            member_id,
            beat: None,
        };
    }

    /// Learned of a rebalance: rejoins soon, or now and then only after a long stretch of
    /// processing (up to past the rebalance timeout) while its heartbeat thread keeps beating.
    fn rejoin_after_rebalance(&mut self, i: usize, m: Membership) {
        if self.rng.below(8) > 0 {
            return self.rejoin(i, m.member_id);
        }
        let delay = self.rng.up_to(REBALANCE_TIMEOUT + Duration::from_secs(30));
        self.note(i, format!("busy for {delay:?} before it rejoins"));
        self.consumers[i].punctual = false;
        self.consumers[i].phase = Phase::Rejoin {
            at: Instant::now() + delay,
            member_id: m.member_id.clone(),
            beat: Some(m),
        };
    }

    /// Sends a Heartbeat and checks the answer against Kafka's rules.
    fn heartbeat(
        &mut self,
        i: usize,
        m: &Membership,
        who: &str,
    ) -> Result<Option<ResponseError>, String> {
        let instance = self.consumers[i].instance.clone();
        let d = self.describe();
        let expected =
            expected_heartbeat(d.as_ref(), &m.member_id, instance.as_deref(), m.generation);
        // The coordinator refreshes the session of a valid member, whatever its generation.
        if self.member_present(&m.member_id)
            && !d
                .as_ref()
                .is_some_and(|d| fenced(d, &m.member_id, instance.as_deref()))
        {
            self.touch(&m.member_id, None);
        }
        let got = self.c.heartbeat(
            GROUP,
            MemberRef::new(&m.member_id, instance.as_deref()),
            m.generation,
        );
        self.observe()?;
        self.note(
            i,
            format!("{who}heartbeat generation {} -> {got:?}", m.generation),
        );
        ensure!(
            got == expected,
            "heartbeat of {} at generation {} got {got:?}, Kafka answers {expected:?} (group \
             {:?})",
            self.name(&m.member_id),
            m.generation,
            d.map(|d| (d.state, d.generation))
        );
        Ok(got)
    }

    /// Checks an OffsetCommit's answer against Kafka's rules.
    fn commit(&mut self, i: usize, m: &Membership, who: &str) -> Check {
        let instance = self.consumers[i].instance.clone();
        let d = self.describe();
        let allowed = expected_commit(d.as_ref(), &m.member_id, instance.as_deref(), m.generation);
        let got = self.c.check_commit(
            GROUP,
            MemberRef::new(&m.member_id, instance.as_deref()),
            m.generation,
        );
        self.note(
            i,
            format!("{who}commit generation {} -> {got:?}", m.generation),
        );
        ensure!(
            allowed.contains(&got),
            "commit of {} at generation {} got {got:?}, Kafka answers one of {allowed:?} \
             (group {:?})",
            self.name(&m.member_id),
            m.generation,
            d.map(|d| (d.state, d.generation))
        );
        self.observe()
    }

    /// Whatever consumer `i` does at this instant on its own.
    fn act(&mut self, i: usize) -> Check {
        let now = Instant::now();
        if let Some(ghost) = self.consumers[i].ghost.take_if(|g| now >= g.until) {
            self.commit(i, &ghost.was, "ghost ")?;
            self.heartbeat(i, &ghost.was, "ghost ")?;
            self.note(i, "ghost exits".into());
        }
        match std::mem::replace(&mut self.consumers[i].phase, Phase::Down) {
            Phase::Down => Ok(()),
            Phase::Rejoin { at, member_id, .. } if now >= at => self.issue_join(i, member_id),
            Phase::Rejoin {
                at,
                mut member_id,
                beat: Some(mut m),
            } if now >= m.next_heartbeat => {
                let mut beat = None;
                match self.heartbeat(i, &m, "")? {
                    None | Some(ResponseError::RebalanceInProgress) => {
                        m.next_heartbeat = now + HEARTBEAT_INTERVAL;
                        beat = Some(m);
                    }
                    // Dropped at the rebalance timeout: it rejoins as a new member.
                    Some(ResponseError::UnknownMemberId) => {
                        member_id = String::new();
                        self.consumers[i].generation = -1;
                    }
                    Some(ResponseError::FencedInstanceId) => return Ok(()),
                    Some(_) => {}
                }
                self.consumers[i].phase = Phase::Rejoin {
                    at,
                    member_id,
                    beat,
                };
                Ok(())
            }
            Phase::Joining {
                member_id,
                since,
                mut fut,
            } => {
                ensure!(
                    now.duration_since(since) <= REBALANCE_TIMEOUT + TICK,
                    "a join has waited {:?}",
                    now.duration_since(since)
                );
                match (&mut fut).now_or_never() {
                    Some(joined) => self.joined(i, joined),
                    None => {
                        self.consumers[i].phase = Phase::Joining {
                            member_id,
                            since,
                            fut,
                        };
                        Ok(())
                    }
                }
            }
            Phase::Syncing {
                member_id,
                generation,
                since,
                mut next_heartbeat,
                mut fut,
            } => {
                ensure!(
                    now.duration_since(since) <= SESSION_TIMEOUT + TICK,
                    "a sync has waited {:?}",
                    now.duration_since(since)
                );
                if let Some(synced) = (&mut fut).now_or_never() {
                    return self.synced(i, member_id, generation, synced);
                }
                if now >= next_heartbeat {
                    // The heartbeat thread keeps the session alive; the sync's answer tells
                    // the consumer what to do next.
                    let m = Membership {
                        member_id: member_id.clone(),
                        generation,
                        partitions: Vec::new(),
                        next_heartbeat,
                    };
                    self.heartbeat(i, &m, "")?;
                    next_heartbeat = now + HEARTBEAT_INTERVAL;
                }
                self.consumers[i].phase = Phase::Syncing {
                    member_id,
                    generation,
                    since,
                    next_heartbeat,
                    fut,
                };
                Ok(())
            }
            Phase::Member(mut m) if now >= m.next_heartbeat => {
                let punctual = self.consumers[i].punctual;
                match self.heartbeat(i, &m, "")? {
                    None => {
                        m.next_heartbeat = now + HEARTBEAT_INTERVAL;
                        self.consumers[i].phase = Phase::Member(m);
                    }
                    Some(ResponseError::RebalanceInProgress) => self.rejoin_after_rebalance(i, m),
                    Some(e) => {
                        ensure!(!punctual, "a punctual consumer's heartbeat got {e:?}");
                        if e == ResponseError::IllegalGeneration {
                            self.rejoin(i, m.member_id);
                        } else {
                            self.lost(i, e);
                        }
                    }
                }
                Ok(())
            }
            Phase::Paused { until, was } if now >= until => {
                self.note(i, "wakes up from a pause".into());
                self.commit(i, &was, "")?;
                let mut m = was;
                m.next_heartbeat = now;
                self.consumers[i].phase = Phase::Member(m);
                self.act(i)
            }
            other => {
                self.consumers[i].phase = other;
                Ok(())
            }
        }
    }

    /// One disruption: a consumer starts, crashes, leaves, commits, pauses, or is given up for
    /// dead while paused and restarted.
    fn chaos(&mut self) -> Check {
        let down: Vec<usize> = (0..CONSUMERS)
            .filter(|i| matches!(self.consumers[*i].phase, Phase::Down))
            .collect();
        let running: Vec<usize> = (0..CONSUMERS)
            .filter(|i| !matches!(self.consumers[*i].phase, Phase::Down))
            .collect();
        let members: Vec<usize> = (0..CONSUMERS)
            .filter(|i| matches!(self.consumers[*i].phase, Phase::Member(_)))
            .collect();
        let committing: Vec<usize> = (0..CONSUMERS)
            .filter(|i| {
                matches!(
                    self.consumers[*i].phase,
                    Phase::Member(_) | Phase::Syncing { .. }
                )
            })
            .collect();
        let rejoining: Vec<usize> = (0..CONSUMERS)
            .filter(|i| {
                matches!(&self.consumers[*i].phase, Phase::Joining { member_id, .. } if !member_id.is_empty())
                    && self.consumers[*i].generation > 0
            })
            .collect();
        let paused: Vec<usize> = (0..CONSUMERS)
            .filter(|i| {
                matches!(self.consumers[*i].phase, Phase::Paused { .. })
                    && self.consumers[*i].ghost.is_none()
            })
            .collect();
        match self.rng.below(8) {
            0 | 1 => {
                if let Some(i) = self.rng.pick(&down) {
                    self.start_consumer(i);
                }
            }
            2 => {
                if let Some(i) = self.rng.pick(&running) {
                    self.note(i, "crashes".into());
                    self.consumers[i].phase = Phase::Down;
                }
            }
            3 => {
                if let Some(i) = self.rng.pick(&members) {
                    self.leave(i)?;
                }
            }
            4 => {
                // A commit, also from a follower waiting for its assignment (an async commit
                // of what it processed before the rebalance).
                if let Some(i) = self.rng.pick(&committing) {
                    let m = match &self.consumers[i].phase {
                        Phase::Member(m) => m.clone(),
                        Phase::Syncing {
                            member_id,
                            generation,
                            next_heartbeat,
                            ..
                        } => Membership {
                            member_id: member_id.clone(),
                            generation: *generation,
                            partitions: Vec::new(),
                            next_heartbeat: *next_heartbeat,
                        },
                        _ => unreachable!("picked among members and syncing consumers"),
                    };
                    self.commit(i, &m, "")?;
                }
            }
            7 => {
                // Its rejoin's answer is lost (a dropped connection) and it stalls: when it
                // carries on, it still believes in the generation it had.
                if let Some(i) = self.rng.pick(&rejoining)
                    && let Phase::Joining { member_id, .. } =
                        std::mem::replace(&mut self.consumers[i].phase, Phase::Down)
                {
                    let stall = Duration::from_secs(1) + self.rng.up_to(Duration::from_secs(20));
                    self.note(
                        i,
                        format!("loses its join's answer and stalls for {stall:?}"),
                    );
                    let was = Membership {
                        member_id,
                        generation: self.consumers[i].generation,
                        partitions: Vec::new(),
                        next_heartbeat: Instant::now(),
                    };
                    self.consumers[i].phase = Phase::Paused {
                        until: Instant::now() + stall,
                        was,
                    };
                    self.consumers[i].punctual = false;
                }
            }
            5 => {
                if let Some(i) = self.rng.pick(&members)
                    && let Phase::Member(m) = &self.consumers[i].phase
                {
                    let was = m.clone();
                    let pause = Duration::from_secs(1) + self.rng.up_to(LONGEST_PAUSE);
                    self.note(i, format!("pauses for {pause:?}"));
                    self.consumers[i].phase = Phase::Paused {
                        until: Instant::now() + pause,
                        was,
                    };
                    self.consumers[i].punctual = false;
                }
            }
            _ => {
                if let Some(i) = self.rng.pick(&paused)
                    && let Phase::Paused { until, was } =
                        std::mem::replace(&mut self.consumers[i].phase, Phase::Down)
                {
                    self.note(i, "given up for dead while paused; restarted".into());
                    self.consumers[i].ghost = Some(Ghost { until, was });
                    self.start_consumer(i);
                }
            }
        }
        Ok(())
    }

    fn start_consumer(&mut self, i: usize) {
        let consumer = &mut self.consumers[i];
        consumer.incarnation += 1;
        consumer.punctual = true;
        consumer.generation = -1;
        consumer.phase = Phase::Rejoin {
            at: Instant::now(),
            member_id: String::new(),
            beat: None,
        };
        self.note(i, "starts".into());
    }

    /// LeaveGroup: a dynamic member by its member id, a static one by its instance id alone
    /// (as an admin's removal does; a static consumer does not leave when it closes).
    fn leave(&mut self, i: usize) -> Check {
        let Phase::Member(m) = std::mem::replace(&mut self.consumers[i].phase, Phase::Down) else {
            return Ok(());
        };
        let instance = self.consumers[i].instance.clone();
        let d = self.describe();
        let (request_id, expected) = match &instance {
            Some(instance) => {
                let holder = d.as_ref().and_then(|d| {
                    d.members
                        .iter()
                        .find(|x| x.group_instance_id.as_deref() == Some(instance))
                        .map(|x| x.member_id.clone())
                });
                (String::new(), holder.ok_or(ResponseError::UnknownMemberId))
            }
            None => {
                let present = d
                    .as_ref()
                    .is_some_and(|d| d.members.iter().any(|x| x.member_id == m.member_id));
                (
                    m.member_id.clone(),
                    if present {
                        Ok(m.member_id.clone())
                    } else {
                        Err(ResponseError::UnknownMemberId)
                    },
                )
            }
        };
        if let Ok(id) = &expected {
            self.excused.insert(id.clone());
        }
        let got = self
            .c
            .leave(GROUP, MemberRef::new(&request_id, instance.as_deref()));
        self.note(i, format!("leaves -> {:?}", got.as_ref().map(|_| ())));
        ensure!(
            got == expected,
            "leave of {} got {got:?}, expected {expected:?}",
            self.name(&m.member_id)
        );
        self.observe()
    }

    /// One tick of 100 ms: the coordinator's deadlines, then every consumer, then perhaps a
    /// disruption.
    async fn step(&mut self, chaos: bool) -> Check {
        tokio::time::advance(TICK).await;
        self.c.tick(Instant::now());
        self.observe()?;
        for i in 0..CONSUMERS {
            self.act(i)?;
        }
        if chaos && self.rng.below(1000) < CHAOS_PER_MILLE {
            self.chaos()?;
        }
        Ok(())
    }

    async fn run(&mut self) -> Check {
        let chaos_until = Instant::now() + CHAOS;
        while Instant::now() < chaos_until {
            self.step(true).await?;
        }
        // Everyone who is down starts again; then nothing changes any more.
        for i in 0..CONSUMERS {
            if matches!(self.consumers[i].phase, Phase::Down) {
                self.start_consumer(i);
            }
        }
        let settle_until = Instant::now() + SETTLE;
        while Instant::now() < settle_until {
            self.step(false).await?;
        }
        self.settled()
    }

    /// The group after the chaos: Stable, with exactly the running consumers, each in the
    /// current generation with its assignment.
    fn settled(&mut self) -> Check {
        let d = self.describe().ok_or("the group is gone")?;
        ensure!(
            d.state == GroupState::Stable,
            "the group did not settle: {:?} at generation {}",
            d.state,
            d.generation
        );
        let mut ids = BTreeSet::new();
        for (i, consumer) in self.consumers.iter().enumerate() {
            let Phase::Member(m) = &consumer.phase else {
                return Err(format!("c{i} is not a member after the group settled"));
            };
            ensure!(
                m.generation == d.generation,
                "c{i} is at generation {}, the group at {}",
                m.generation,
                d.generation
            );
            let mine = d
                .members
                .iter()
                .find(|x| x.member_id == m.member_id)
                .ok_or(format!("c{i}'s member id is not in the group"))?;
            ensure!(
                decode(&mine.assignment) == m.partitions,
                "c{i} consumes {:?}, the coordinator says {:?}",
                m.partitions,
                decode(&mine.assignment)
            );
            ids.insert(m.member_id.clone());
        }
        ensure!(
            ids == self.members,
            "the group has members no running consumer is: {} members, {} consumers",
            self.members.len(),
            ids.len()
        );
        Ok(())
    }
}

/// Runs the simulation for `seed`: its event log, or the broken rule with the log.
async fn simulate(seed: u64) -> Result<Vec<String>, (String, Vec<String>)> {
    let mut sim = Sim::new(seed);
    let outcome = std::panic::AssertUnwindSafe(sim.run()).catch_unwind().await;
    match outcome {
        Ok(Ok(())) => Ok(sim.log),
        Ok(Err(broken)) => Err((broken, sim.log)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err((format!("panicked: {what}"), sim.log))
        }
    }
}

fn report(seed: u64, broken: &str, log: &[String]) -> String {
    let tail = &log[log.len().saturating_sub(150)..];
    format!(
        "seed {seed}: {broken}\n(last {} of {} events)\n{}",
        tail.len(),
        log.len(),
        tail.join("\n")
    )
}

#[tokio::test(start_paused = true)]
async fn the_group_keeps_kafkas_guarantees_under_random_schedules() {
    let mut events = 0;
    let mut generations = 0;
    for seed in 0..SEEDS {
        match simulate(seed).await {
            Ok(log) => {
                events += log.len();
                generations += log.iter().filter(|l| l.contains(" synced ")).count();
            }
            Err((broken, log)) => panic!("{}", report(seed, &broken, &log)),
        }
    }
    // The runs did exercise the protocol (not a vacuous pass).
    assert!(events > 100 * SEEDS as usize, "only {events} events");
    assert!(
        generations > 10 * SEEDS as usize,
        "only {generations} syncs"
    );
}

#[tokio::test(start_paused = true)]
async fn a_seed_replays_the_same_run() {
    let first = simulate(7).await.map_err(|(b, l)| report(7, &b, &l));
    let second = simulate(7).await.map_err(|(b, l)| report(7, &b, &l));
    let first = first.expect("seed 7");
    assert_eq!(first, second.expect("seed 7"));
    assert_ne!(
        first,
        simulate(8)
            .await
            .map_err(|(b, l)| report(8, &b, &l))
            .expect("seed 8"),
        "another seed, another run"
    );
}
