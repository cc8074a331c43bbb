//! The classic consumer-group protocol's state machine (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup), as a Kafka group coordinator runs it for the groups it owns.
//!
//! States: `Empty` → (a join) → `PreparingRebalance` → (every known member rejoined, or the
//! rebalance timeout passed; stragglers are removed) → `CompletingRebalance` with a new
//! generation, the leader got every member's metadata → (the leader's SyncGroup) → `Stable`,
//! every member gets its assignment. A join, leave or session expiry in any state starts a new
//! rebalance. The coordinator never looks inside protocols or assignments: the client-side
//! assignor (range, roundrobin, sticky, cooperative-sticky) decides, the leader's assignment is
//! relayed untouched.
//!
//! Concurrency: each group is one `std` mutex held only for bookkeeping, never across an
//! await; callers that must wait (a join until the rebalance completes, a follower's sync until
//! the leader's) hold a oneshot receiver. [`GroupCoordinator::tick`] enforces the deadlines
//! (rebalance timeout, session timeouts) and is called periodically by its owner.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;
use tracing::debug;
// Tokio's clock, so tests can run the deadlines on paused time.
use tokio::time::Instant;
use uuid::Uuid;

/// Limits of the coordinator (Kafka's `group.min/max.session.timeout.ms`).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// How long the first rebalance of an empty group waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`), so a group that starts together forms one
    /// generation instead of one per arriving member.
    pub initial_rebalance_delay: Duration,
    /// How long a group with no members stays in the coordinator's memory (and in ListGroups)
    /// before it is forgotten; its committed offsets stay in the store. Bounds the memory of a
    /// coordinator that sees many short-lived groups (console consumers, test runs).
    pub empty_group_expiry: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout: Duration::from_millis(1_000),
            max_session_timeout: Duration::from_secs(30 * 60),
            initial_rebalance_delay: Duration::from_secs(3),
            empty_group_expiry: Duration::from_secs(10 * 60),
        }
    }
}

/// A JoinGroup as the state machine sees it.
#[derive(Debug, Clone)]
pub(crate) struct Join {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    /// The client's address as the coordinator saw it (DescribeGroups reports it).
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id first gets one with MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Joined {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: (member id, group instance id, metadata of the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl Joined {
    fn error(error: ResponseError, member_id: String) -> Self {
        Joined {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id,
            members: Vec::new(),
        }
    }
}

/// Who a request speaks for: its member id and, for static members, its instance id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemberRef<'a> {
    pub id: &'a str,
    pub instance: Option<&'a str>,
}

impl<'a> MemberRef<'a> {
    pub(crate) fn new(id: &'a str, instance: Option<&'a str>) -> Self {
        MemberRef { id, instance }
    }
}

/// The answer to a SyncGroup: an error or the member's assignment.
pub(crate) type Synced = Result<Bytes, ResponseError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka reports in DescribeGroups and ListGroups.
    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// One member as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Its metadata for the group's chosen protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupDescription {
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<Joined>>,
    sync_waiter: Option<oneshot::Sender<Synced>>,
}

impl Member {
    /// Answers the member's waiting join and sync, if any, with `error`.
    fn fail_waiters(&mut self, id: &str, error: ResponseError) {
        if let Some(w) = self.join_waiter.take() {
            let _ = w.send(Joined::error(error, id.to_string()));
        }
        if let Some(w) = self.sync_waiter.take() {
            let _ = w.send(Err(error));
        }
    }
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED and not yet used to join.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// The first rebalance of an empty group: it completes at its deadline, not when everyone
    /// has joined (see [`GroupConfig::initial_rebalance_delay`]); started at the instant given.
    initial_join: Option<Instant>,
    /// When a tick first saw this group without members (see
    /// [`GroupConfig::empty_group_expiry`]).
    empty_since: Option<Instant>,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_join: None,
            empty_since: None,
        }
    }

    /// Notes at `now` whether the group is empty; true once it has been for `expiry`.
    fn empty_for(&mut self, now: Instant, expiry: Duration) -> bool {
        let empty =
            self.state == GroupState::Empty && self.members.is_empty() && self.pending.is_empty();
        if !empty {
            self.empty_since = None;
            return false;
        }
        let since = *self.empty_since.get_or_insert(now);
        now.duration_since(since) >= expiry
    }

    /// Moves to PreparingRebalance (members must rejoin within the longest rebalance timeout).
    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        if self.state == GroupState::Empty {
            self.state = GroupState::PreparingRebalance;
            self.initial_join = Some(now);
            self.rebalance_deadline =
                Some(now + initial_delay.min(self.longest_rebalance_timeout()));
            return;
        }
        // Followers waiting for an assignment of the old generation learn it is gone.
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(ResponseError::RebalanceInProgress));
            }
        }
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + self.longest_rebalance_timeout());
    }

    fn longest_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    fn member_of_instance(&self, instance: &str) -> Option<String> {
        self.members
            .iter()
            .find(|(_, m)| m.group_instance_id.as_deref() == Some(instance))
            .map(|(id, _)| id.clone())
    }

    /// Checks that `member_id` (and its instance id, if the request names one) is a current
    /// member: FENCED_INSTANCE_ID when the instance id now belongs to another member id.
    fn validate_member(
        &self,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance
            && let Some(owner) = self.member_of_instance(instance)
            && owner != member_id
        {
            return Err(ResponseError::FencedInstanceId);
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(ResponseError::UnknownMemberId)
        }
    }

    /// Moves a restarted static member from `old` to `new` id. In a stable group whose
    /// protocols it still matches, the answer is immediate (same generation, no rebalance: the
    /// point of static membership); otherwise `None` and the join proceeds as a rejoin.
    fn replace_static_member(
        &mut self,
        old: &str,
        new: &str,
        join: &Join,
        now: Instant,
    ) -> Option<Joined> {
        let mut m = self.members.remove(old)?;
        m.fail_waiters(old, ResponseError::FencedInstanceId);
        // Kafka's test: the group's chosen protocol is still one the member supports (its
        // metadata may differ, e.g. the partitions it owned before the restart).
        let unchanged = self
            .protocol_name
            .as_ref()
            .is_some_and(|p| join.protocols.iter().any(|(name, _)| name == p));
        m.protocols = join.protocols.clone();
        m.last_seen = now;
        m.client_id = join.client_id.clone();
        m.client_host = join.client_host.clone();
        self.members.insert(new.to_string(), m);
        let was_leader = self.leader.as_deref() == Some(old);
        if was_leader {
            self.leader = Some(new.to_string());
        }
        if self.state == GroupState::Stable && unchanged {
            // A leader gets the member list as in any join; its SyncGroup in a stable group
            // returns the assignment in force, so nothing is reassigned.
            let members = if was_leader {
                self.member_listing()
            } else {
                Vec::new()
            };
            return Some(Joined {
                error: None,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                leader: self.leader.clone().unwrap_or_default(),
                member_id: new.to_string(),
                members,
            });
        }
        None
    }

    /// Every member with its metadata for the chosen protocol (what the leader assigns from).
    fn member_listing(&self) -> Vec<(String, Option<String>, Bytes)> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| {
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(name, _)| *name == protocol)
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default();
                (id.clone(), m.group_instance_id.clone(), metadata)
            })
            .collect()
    }

    fn all_rejoined(&self) -> bool {
        self.members.values().all(|m| m.join_waiter.is_some())
    }

    /// Ends the join phase: drops members that did not rejoin, bumps the generation, picks the
    /// protocol and the leader, and answers every waiting join.
    fn complete_join(&mut self, now: Instant) {
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.rebalance_deadline = None;
        self.initial_join = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.protocol_name = None;
            self.leader = None;
            return;
        }
        self.generation += 1;
        ::metrics::counter!(kafscale_shared::metrics::GROUP_REBALANCES).increment(1);
        self.state = GroupState::CompletingRebalance;
        self.protocol_name = self.choose_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        let listing = self.member_listing();
        for (id, m) in self.members.iter_mut() {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Joined {
                    error: None,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        listing.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let common: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(p, _)| common.contains(&p)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        // Most votes; ties go to the earliest in the first member's preference.
        common
            .iter()
            .max_by_key(|n| {
                (
                    votes.get(*n).copied().unwrap_or(0),
                    std::cmp::Reverse(common.iter().position(|c| c == *n)),
                )
            })
            .map(|n| (*n).clone())
    }

    fn supports(&self, join: &Join) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(join.protocol_type.as_str()) {
            return false;
        }
        // At least one protocol every current member also supports.
        join.protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(p, _)| p == name))
        })
    }

    fn remove_member(&mut self, id: &str, now: Instant) {
        if let Some(mut m) = self.members.remove(id) {
            m.fail_waiters(id, ResponseError::UnknownMemberId);
            match self.state {
                GroupState::Empty => {}
                GroupState::PreparingRebalance => {
                    if self.members.is_empty()
                        || (self.initial_join.is_none() && self.all_rejoined())
                    {
                        self.complete_join(now);
                    }
                }
                GroupState::CompletingRebalance | GroupState::Stable => {
                    if self.members.is_empty() {
                        self.state = GroupState::Empty;
                        self.generation += 1;
                        self.leader = None;
                        self.protocol_name = None;
                    } else {
                        self.prepare_rebalance(now, Duration::ZERO);
                    }
                }
            }
        }
    }
}

/// Every group this coordinator owns.
#[derive(Default)]
pub(crate) struct GroupCoordinator {
    config: GroupConfig,
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator")
            .field("config", &self.config)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupCoordinator {
    pub(crate) fn new(config: GroupConfig) -> Self {
        GroupCoordinator {
            config,
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn group(&self, id: &str) -> Arc<Mutex<Group>> {
        lock(&self.groups)
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Group::new())))
            .clone()
    }

    fn existing(&self, id: &str) -> Option<Arc<Mutex<Group>>> {
        lock(&self.groups).get(id).cloned()
    }

    /// The group's state and generation, if it exists.
    #[cfg(test)]
    pub(crate) fn state(&self, group_id: &str) -> Option<(GroupState, i32)> {
        let g = self.existing(group_id)?;
        let g = lock(&g);
        Some((g.state, g.generation))
    }

    /// Handles a JoinGroup; resolves when the rebalance it takes part in completes.
    pub(crate) async fn join(&self, group_id: &str, join: Join) -> Joined {
        let now = Instant::now();
        if join.session_timeout < self.config.min_session_timeout
            || join.session_timeout > self.config.max_session_timeout
        {
            return Joined::error(ResponseError::InvalidSessionTimeout, join.member_id);
        }
        if join.protocols.is_empty() || join.protocol_type.is_empty() {
            return Joined::error(ResponseError::InconsistentGroupProtocol, join.member_id);
        }
        let group = self.group(group_id);
        let rx = {
            let mut g = lock(&group);
            if !g.supports(&join) {
                return Joined::error(ResponseError::InconsistentGroupProtocol, join.member_id);
            }
            let mut member_id = join.member_id.clone();
            let static_id = join
                .group_instance_id
                .as_ref()
                .and_then(|instance| g.member_of_instance(instance));
            if let (Some(old), false) = (&static_id, member_id.is_empty()) {
                if *old != member_id {
                    // Another process has taken this instance id since.
                    return Joined::error(ResponseError::FencedInstanceId, member_id);
                }
            } else if let Some(old) = static_id {
                // A static member restarting: it gets a new member id, its old one is fenced,
                // and it keeps its place (and assignment) in the group.
                member_id = format!("{}-{}", join.client_id, Uuid::new_v4().simple());
                if let Some(answer) = g.replace_static_member(&old, &member_id, &join, now) {
                    return answer;
                }
            } else if member_id.is_empty() {
                member_id = format!("{}-{}", join.client_id, Uuid::new_v4().simple());
                if join.require_known_member_id && join.group_instance_id.is_none() {
                    g.pending.insert(member_id.clone(), now);
                    return Joined::error(ResponseError::MemberIdRequired, member_id);
                }
            } else if !g.members.contains_key(&member_id) && g.pending.remove(&member_id).is_none()
            {
                return Joined::error(ResponseError::UnknownMemberId, member_id);
            }
            if g.members.is_empty() {
                g.protocol_type = Some(join.protocol_type.clone());
            }
            let (tx, rx) = oneshot::channel();
            let member = g.members.entry(member_id.clone()).or_insert(Member {
                group_instance_id: join.group_instance_id.clone(),
                client_id: join.client_id.clone(),
                client_host: join.client_host.clone(),
                session_timeout: join.session_timeout,
                rebalance_timeout: join.rebalance_timeout,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
            });
            member.session_timeout = join.session_timeout;
            member.rebalance_timeout = join.rebalance_timeout;
            member.protocols = join.protocols.clone();
            member.last_seen = now;
            let new_member = member.join_waiter.is_none() && member.assignment.is_empty();
            let rebalance_timeout = member.rebalance_timeout;
            if let Some(old) = member.join_waiter.replace(tx) {
                let _ = old.send(Joined::error(
                    ResponseError::UnknownMemberId,
                    member_id.clone(),
                ));
            }
            let delay = self.config.initial_rebalance_delay;
            g.prepare_rebalance(now, delay);
            match g.initial_join {
                // Each member arriving during the initial delay extends it, up to the longest
                // rebalance timeout from its start.
                Some(started) if new_member => {
                    let extended = (now + delay).min(started + rebalance_timeout);
                    if g.rebalance_deadline.is_none_or(|d| d < extended) {
                        g.rebalance_deadline = Some(extended);
                    }
                }
                Some(_) => {}
                None => {
                    if g.all_rejoined() {
                        g.complete_join(now);
                    }
                }
            }
            rx
        };
        rx.await
            .unwrap_or_else(|_| Joined::error(ResponseError::UnknownMemberId, join.member_id))
    }

    /// Handles a SyncGroup; a follower's resolves when the leader's assignment arrives.
    pub(crate) async fn sync(
        &self,
        group_id: &str,
        member: MemberRef<'_>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Synced {
        let Some(group) = self.existing(group_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        let member_id = member.id;
        let rx = {
            let mut g = lock(&group);
            g.validate_member(member_id, member.instance)?;
            if generation != g.generation {
                return Err(ResponseError::IllegalGeneration);
            }
            match g.state {
                GroupState::Empty => return Err(ResponseError::UnknownMemberId),
                GroupState::PreparingRebalance => return Err(ResponseError::RebalanceInProgress),
                GroupState::Stable => {
                    return Ok(g.members[member_id].assignment.clone());
                }
                GroupState::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            if let Some(m) = g.members.get_mut(member_id) {
                m.last_seen = Instant::now();
                m.sync_waiter = Some(tx);
            }
            if g.leader.as_deref() == Some(member_id) {
                let given: HashMap<String, Bytes> = assignments.into_iter().collect();
                for (id, m) in g.members.iter_mut() {
                    m.assignment = given.get(id).cloned().unwrap_or_default();
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send(Ok(m.assignment.clone()));
                    }
                }
                g.state = GroupState::Stable;
            }
            rx
        };
        rx.await.unwrap_or(Err(ResponseError::RebalanceInProgress))
    }

    /// Handles a Heartbeat.
    pub(crate) fn heartbeat(
        &self,
        group_id: &str,
        member: MemberRef<'_>,
        generation: i32,
    ) -> Option<ResponseError> {
        let Some(group) = self.existing(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        let mut g = lock(&group);
        if let Err(e) = g.validate_member(member.id, member.instance) {
            return Some(e);
        }
        let state = g.state;
        let current = g.generation;
        if let Some(m) = g.members.get_mut(member.id) {
            m.last_seen = Instant::now();
        }
        if generation != current {
            return Some(ResponseError::IllegalGeneration);
        }
        match state {
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::Empty => Some(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => None,
        }
    }

    /// Handles one member of a LeaveGroup (v3+ may name it by instance id alone). Returns the
    /// member id that left.
    pub(crate) fn leave(
        &self,
        group_id: &str,
        member: MemberRef<'_>,
    ) -> Result<String, ResponseError> {
        let Some(group) = self.existing(group_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        let mut g = lock(&group);
        let id = match member.instance {
            Some(instance) if member.id.is_empty() => g
                .member_of_instance(instance)
                .ok_or(ResponseError::UnknownMemberId)?,
            _ => member.id.to_string(),
        };
        g.validate_member(&id, member.instance)?;
        g.remove_member(&id, Instant::now());
        Ok(id)
    }

    /// Whether an OffsetCommit may be stored (Kafka's rules): a commit without generation and
    /// member id ("simple", e.g. `assign()` consumers and admin tools) only to a group without
    /// members; a member's commit only at the current generation, also while the group
    /// prepares a rebalance (so members can commit what they processed before rejoining), but
    /// not while it waits for the leader's assignment.
    pub(crate) fn check_commit(
        &self,
        group_id: &str,
        member: MemberRef<'_>,
        generation: i32,
    ) -> Option<ResponseError> {
        let simple = generation < 0 && member.id.is_empty() && member.instance.is_none();
        let Some(group) = self.existing(group_id) else {
            return (!simple).then_some(ResponseError::IllegalGeneration);
        };
        let g = lock(&group);
        if simple {
            return (g.state != GroupState::Empty).then_some(ResponseError::UnknownMemberId);
        }
        if g.state == GroupState::Empty {
            return Some(ResponseError::IllegalGeneration);
        }
        if let Err(e) = g.validate_member(member.id, member.instance) {
            return Some(e);
        }
        if generation != g.generation {
            return Some(ResponseError::IllegalGeneration);
        }
        match g.state {
            GroupState::CompletingRebalance => Some(ResponseError::RebalanceInProgress),
            _ => None,
        }
    }

    /// The group as DescribeGroups reports it, if this coordinator knows it.
    pub(crate) fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let group = self.existing(group_id)?;
        let g = lock(&group);
        let protocol = g.protocol_name.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state,
            generation: g.generation,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == protocol)
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// How many members wait in a join and in a sync (tests wait on it instead of sleeping).
    #[cfg(test)]
    fn waiters(&self, group_id: &str) -> (usize, usize) {
        self.existing(group_id).map_or((0, 0), |g| {
            let g = lock(&g);
            let joins = g
                .members
                .values()
                .filter(|m| m.join_waiter.is_some())
                .count();
            let syncs = g
                .members
                .values()
                .filter(|m| m.sync_waiter.is_some())
                .count();
            (joins, syncs)
        })
    }

    /// Every group this coordinator holds in memory with its member count (for metrics).
    pub(crate) fn member_counts(&self) -> Vec<(String, usize)> {
        let groups: Vec<(String, Arc<Mutex<Group>>)> = lock(&self.groups)
            .iter()
            .map(|(id, g)| (id.clone(), g.clone()))
            .collect();
        groups
            .into_iter()
            .map(|(id, g)| {
                let n = lock(&g).members.len();
                (id, n)
            })
            .collect()
    }

    /// Every group this coordinator holds in memory: (group id, protocol type, state).
    pub(crate) fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups: Vec<(String, Arc<Mutex<Group>>)> = lock(&self.groups)
            .iter()
            .map(|(id, g)| (id.clone(), g.clone()))
            .collect();
        let mut out: Vec<(String, String, GroupState)> = groups
            .into_iter()
            .map(|(id, g)| {
                let g = lock(&g);
                (id, g.protocol_type.clone().unwrap_or_default(), g.state)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Forgets an empty group (DeleteGroups); NON_EMPTY_GROUP while it has members.
    pub(crate) fn delete(&self, group_id: &str) -> Result<(), ResponseError> {
        let mut groups = lock(&self.groups);
        if let Some(g) = groups.get(group_id)
            && !lock(g).members.is_empty()
        {
            return Err(ResponseError::NonEmptyGroup);
        }
        groups.remove(group_id);
        Ok(())
    }

    /// Every member's metadata for the group's chosen protocol (to tell which topics the group
    /// subscribes to); empty for an empty or unknown group.
    pub(crate) fn member_metadata(&self, group_id: &str) -> (String, Vec<Bytes>) {
        match self.describe(group_id) {
            Some(d) => (
                d.protocol_type,
                d.members.into_iter().map(|m| m.metadata).collect(),
            ),
            None => (String::new(), Vec::new()),
        }
    }

    /// Drops the groups `gone` selects (this coordinator lost their lease): waiting joins and
    /// syncs are answered NOT_COORDINATOR, so the members find the new coordinator.
    pub(crate) fn forget(&self, gone: impl Fn(&str) -> bool) {
        let dropped: Vec<Arc<Mutex<Group>>> = {
            let mut groups = lock(&self.groups);
            let ids: Vec<String> = groups.keys().filter(|id| gone(id)).cloned().collect();
            ids.iter().filter_map(|id| groups.remove(id)).collect()
        };
        for group in dropped {
            let mut g = lock(&group);
            for (id, m) in g.members.iter_mut() {
                m.fail_waiters(id, ResponseError::NotCoordinator);
            }
        }
    }

    /// Enforces deadlines: completes joins whose rebalance timeout passed (removing members
    /// that did not rejoin), removes members whose session expired, and forgets groups empty
    /// for [`GroupConfig::empty_group_expiry`]. Call periodically.
    pub(crate) fn tick(&self, now: Instant) {
        self.enforce_deadlines(now);
        self.forget_expired_empty_groups(now);
    }

    /// Drops the groups that have been empty long enough. A group another task holds (a join
    /// that just looked it up) stays: only the map's own reference may be dropped, checked
    /// under the map's lock, where every lookup takes its reference.
    fn forget_expired_empty_groups(&self, now: Instant) {
        let expiry = self.config.empty_group_expiry;
        let mut groups = lock(&self.groups);
        let before = groups.len();
        groups.retain(|_, g| Arc::strong_count(g) > 1 || !lock(g).empty_for(now, expiry));
        if groups.len() < before {
            debug!(forgotten = before - groups.len(), "empty groups forgotten");
        }
    }

    fn enforce_deadlines(&self, now: Instant) {
        let groups: Vec<Arc<Mutex<Group>>> = lock(&self.groups).values().cloned().collect();
        for group in groups {
            let mut g = lock(&group);
            if g.state == GroupState::PreparingRebalance
                && g.rebalance_deadline.is_some_and(|d| now >= d)
            {
                g.complete_join(now);
            }
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| {
                    // A member waiting in a join is alive by definition.
                    m.join_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                g.remove_member(&id, now);
            }
            g.pending
                .retain(|_, at| now.duration_since(*at) < Duration::from_secs(300));
        }
    }
}

#[cfg(test)]
mod tests;
