//! Which replica coordinates which consumer group.
//!
//! Groups hash onto a fixed number of coordinator slots (Kafka hashes them onto partitions of
//! `__consumer_offsets`); each slot is a lease in the metadata store, held by one replica at a
//! time, with an epoch that grows on every change of owner. FindCoordinator on any process
//! answers with the slot owner's advertised address; only the owner serves the group's
//! membership and offsets, everyone else answers NOT_COORDINATOR. Replicas spread the slots
//! evenly (each aims at its share of the live replicas) and take over the slots of a replica
//! that stopped renewing. A deposed owner cannot store anything: every offset write carries a
//! check of the lease version it holds ([`LeaseFence`]). Membership lives in memory, so two
//! replicas must never serve one slot at once: the owner stops serving 0.8 × TTL after its last
//! renewal began, on its own monotonic clock, and another replica takes the slot only after it
//! has seen the lease unchanged for a full TTL of its own clock
//! ([`kafscale_shared::lease_observations`]), so the owner has stopped first whatever the
//! machines' wall clocks say.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafscale_shared::catalog::{Catalog, CatalogError, LeaseFence, LeaseRecord};
use kafscale_shared::listener_addresses::{ListenerAddressBook, ListenerMap};
use kafscale_shared::topic_api::{BrokerAddr, TopicApi};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::groups::GroupCoordinator;

/// Coordinator slots (fixed for the life of a cluster: a group's slot must not move).
pub const GROUP_SLOTS: u32 = 16;

/// The member kind under which coordinating replicas heartbeat (to count them).
pub const COORDINATOR_MEMBER_KIND: &str = "group-coordinator";
const MEMBER_KIND: &str = COORDINATOR_MEMBER_KIND;

/// The member kind under which replicas that do not coordinate (ingest gateways) heartbeat:
/// they hold no lease of their own, and this item is what shows them alive in the cluster
/// view. The same lease round writes it, so there is no second loop keeping liveness.
pub const NON_COORDINATOR_MEMBER_KIND: &str = "ingest";

/// Prefix of the coordinator slot leases (`groups/{slot:03}`).
pub const GROUP_LEASE_PREFIX: &str = "groups/";
const LEASE_PREFIX: &str = GROUP_LEASE_PREFIX;

/// The coordinator slot of a group.
pub fn group_slot(group: &str) -> u32 {
    crc32c::crc32c(group.as_bytes()) % GROUP_SLOTS
}

fn slot_lease_name(slot: u32) -> String {
    format!("{LEASE_PREFIX}{slot:03}")
}

/// How this process takes part in group coordination.
#[derive(Debug, Clone)]
pub struct GroupLeaseConfig {
    /// Whether it coordinates groups (fetch gateways, standalone) or only points clients at
    /// the replicas that do (ingest gateways).
    pub coordinates: bool,
    /// Lease time: how long a dead coordinator's groups wait before moving.
    pub ttl: Duration,
    /// Who holds the leases: by default a new id per process (two replicas must never share
    /// one). Standalone uses a fixed id: it is the only coordinator, and after a restart it
    /// renews its own leases at once instead of waiting for them to expire.
    pub owner_id: Option<String>,
    /// The address ("host:port") clients reach this replica itself at, for FindCoordinator;
    /// by default the advertised address. Replicas behind one Service name must each set
    /// their own (in Kubernetes the pod address), or clients would land on any replica.
    pub coordinator_addr: Option<String>,
}

impl Default for GroupLeaseConfig {
    fn default() -> Self {
        GroupLeaseConfig {
            coordinates: true,
            ttl: Duration::from_secs(10),
            owner_id: None,
            coordinator_addr: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Held {
    version: u64,
    epoch: u64,
    /// Past this instant (0.8 × TTL after the last renewal began) another replica may soon
    /// take the lease: stop serving. Takers wait a full TTL after they last saw it change.
    valid_until: Instant,
}

/// The slots this replica holds and the owners of the others, as last seen.
pub(crate) struct GroupLeases {
    catalog: Arc<Catalog>,
    config: GroupLeaseConfig,
    me: BrokerAddr,
    pub(crate) owner_id: String,
    owner_addr: String,
    /// This replica's named listeners, published in its leases (empty with one listener).
    listeners: ListenerMap,
    /// Where the owners' listener addresses read from their leases are recorded.
    listener_addresses: Arc<ListenerAddressBook>,
    held: Mutex<Vec<Option<Held>>>,
    owners: Mutex<Vec<Option<LeaseRecord>>>,
    round: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one round of lease maintenance changed.
#[derive(Debug, Default)]
pub(crate) struct SlotReport {
    pub owned: Vec<u32>,
    pub acquired: Vec<u32>,
    /// Slots lost to another replica or to a failed renewal, and slots given up to balance.
    pub dropped: Vec<u32>,
}

impl GroupLeases {
    /// `me` is this process as clients reach it (its leases name its address).
    pub(crate) fn new(
        catalog: Arc<Catalog>,
        advertised: BrokerAddr,
        config: GroupLeaseConfig,
    ) -> Self {
        let me = config
            .coordinator_addr
            .as_deref()
            .and_then(BrokerAddr::from_advertised)
            .unwrap_or(advertised);
        let owner_addr = if me.host.contains(':') {
            format!("[{}]:{}", me.host, me.port)
        } else {
            format!("{}:{}", me.host, me.port)
        };
        let owner_id = config.owner_id.clone().unwrap_or_else(|| {
            let kind = if config.coordinates {
                "coordinator"
            } else {
                NON_COORDINATOR_MEMBER_KIND
            };
            format!("{kind}-{}", uuid::Uuid::new_v4().simple())
        });
        GroupLeases {
            catalog,
            config,
            me,
            owner_id,
            owner_addr,
            listeners: ListenerMap::new(),
            listener_addresses: Arc::default(),
            held: Mutex::new(vec![None; GROUP_SLOTS as usize]),
            owners: Mutex::new(vec![None; GROUP_SLOTS as usize]),
            round: tokio::sync::Mutex::new(()),
        }
    }

    /// Publishes `listeners` (this replica's, name → advertised address) in its leases, and
    /// records the other owners' listeners in `book` whenever their leases are read.
    pub(crate) fn with_listeners(
        mut self,
        listeners: ListenerMap,
        book: Arc<ListenerAddressBook>,
    ) -> Self {
        self.listeners = listeners;
        self.listener_addresses = book;
        self
    }

    /// The fence for writes of `group`'s coordinator, if this replica is it right now.
    pub(crate) fn fence(&self, group: &str) -> Option<LeaseFence> {
        let slot = group_slot(group);
        let held = lock(&self.held);
        match &held[slot as usize] {
            Some(h) if Instant::now() < h.valid_until => Some(LeaseFence {
                name: slot_lease_name(slot),
                version: h.version,
            }),
            _ => None,
        }
    }

    /// The epoch of the lease under which this replica coordinates `group`, if it does.
    pub(crate) fn epoch(&self, group: &str) -> Option<u64> {
        let slot = group_slot(group);
        let held = lock(&self.held);
        match &held[slot as usize] {
            Some(h) if Instant::now() < h.valid_until => Some(h.epoch),
            _ => None,
        }
    }

    /// After a fenced write was refused with `stale`: the fence to retry with, if the lease is
    /// still this replica's. The renewal round writes a new lease version before it records it
    /// here, so a write in between carries the old version; the store then shows the lease
    /// under this owner and epoch at a newer version. `None`: another replica holds the slot
    /// (or this one no longer does), so the answer is NOT_COORDINATOR.
    pub(crate) async fn confirm_fence(
        &self,
        group: &str,
        stale: &LeaseFence,
    ) -> Result<Option<LeaseFence>, CatalogError> {
        let Some(epoch) = self.epoch(group) else {
            return Ok(None);
        };
        if self.fence(group).as_ref() != Some(stale) {
            // The round recorded a renewal meanwhile: its fence is current.
            return Ok(self.fence(group));
        }
        let Some((lease, version)) = self.catalog.lease(&stale.name).await? else {
            return Ok(None);
        };
        let ours = lease.owner == self.owner_id
            && lease.epoch == epoch
            && !lease.released
            && version != stale.version;
        Ok(ours.then(|| LeaseFence {
            name: stale.name.clone(),
            version,
        }))
    }

    /// Writes a renewal of `group`'s slot lease to the store without recording it, as the
    /// round does between its write and its bookkeeping.
    #[cfg(test)]
    pub(crate) async fn renew_in_store_only(&self, group: &str) {
        self.take(group_slot(group))
            .await
            .expect("store")
            .expect("the lease is ours");
    }

    /// Whether this replica coordinates `group` right now.
    pub(crate) fn owns(&self, group: &str) -> bool {
        self.fence(group).is_some()
    }

    /// The coordinator of `group` (this replica or the live owner of its slot), reading the
    /// leases again if the cached owner is unknown or expired. `None`: no live owner yet.
    pub(crate) async fn coordinator(&self, group: &str) -> Option<BrokerAddr> {
        if self.owns(group) {
            return Some(self.me.clone());
        }
        let slot = group_slot(group) as usize;
        let live = |owners: &Vec<Option<LeaseRecord>>| {
            owners[slot]
                .as_ref()
                .filter(|l| {
                    l.expires_at_ms > self.catalog.wall_now_ms() && l.owner != self.owner_id
                })
                .and_then(|l| BrokerAddr::from_advertised(&l.owner_addr))
        };
        if let Some(addr) = live(&lock(&self.owners)) {
            return Some(addr);
        }
        if let Err(e) = self.refresh_owners().await {
            warn!(error = %e, "reading group coordinator leases failed");
        }
        live(&lock(&self.owners))
    }

    /// The live coordinating replicas, this one included (Metadata lists them: a client must
    /// keep knowing its coordinator).
    pub(crate) fn peers(&self) -> Vec<BrokerAddr> {
        let now = self.catalog.wall_now_ms();
        let mut out: Vec<BrokerAddr> = Vec::new();
        for lease in lock(&self.owners).iter().flatten() {
            if lease.expires_at_ms > now
                && let Some(addr) = BrokerAddr::from_advertised(&lease.owner_addr)
                && !out.contains(&addr)
            {
                out.push(addr);
            }
        }
        out
    }

    async fn refresh_owners(&self) -> Result<(), CatalogError> {
        let leases = self.catalog.leases(LEASE_PREFIX).await?;
        let now = self.catalog.wall_now_ms();
        if let Some((_, clash, _)) = leases.iter().find(|(_, l, _)| {
            l.owner_addr == self.owner_addr && l.owner != self.owner_id && l.expires_at_ms > now
        }) {
            warn!(
                addr = self.owner_addr,
                other = clash.owner,
                "another group coordinator uses this replica's address; give each fetch replica its own --coordinator-addr"
            );
        }
        let mut owners = vec![None; GROUP_SLOTS as usize];
        for (name, lease, _) in leases {
            self.listener_addresses
                .record(&lease.owner_addr, &lease.listeners);
            if let Some(slot) = name
                .strip_prefix(LEASE_PREFIX)
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|s| *s < owners.len())
            {
                owners[slot] = Some(lease);
            }
        }
        *lock(&self.owners) = owners;
        Ok(())
    }

    async fn take(&self, slot: u32) -> Result<Option<(LeaseRecord, u64)>, CatalogError> {
        self.catalog
            .acquire_lease_advertising(
                &slot_lease_name(slot),
                &self.owner_id,
                &self.owner_addr,
                &self.listeners,
                self.config.ttl,
            )
            .await
    }

    /// Renews the held slots, takes free, released or abandoned ones up to `target`, gives up
    /// those above it, and refreshes the view of the other owners (which also starts the wait
    /// for an owner that stops renewing).
    pub(crate) async fn maintain(&self, target: usize) -> SlotReport {
        let _round = self.round.lock().await;
        let mut report = SlotReport::default();
        let held_now: Vec<u32> = lock(&self.held)
            .iter()
            .enumerate()
            .filter_map(|(s, h)| h.as_ref().map(|_| s as u32))
            .collect();
        for slot in held_now {
            // Validity counts from before the write, so it ends before any taker's wait (a
            // full TTL from its first read of the version written here).
            let started = Instant::now();
            match self.take(slot).await {
                Ok(Some((lease, version))) => {
                    lock(&self.held)[slot as usize] = Some(Held {
                        version,
                        epoch: lease.epoch,
                        valid_until: started + self.config.ttl.mul_f64(0.8),
                    });
                    report.owned.push(slot);
                }
                Ok(None) => {
                    warn!(slot, "group coordinator lease lost to another replica");
                    lock(&self.held)[slot as usize] = None;
                    report.dropped.push(slot);
                }
                // Keep serving while the lease is surely still ours; the next round retries.
                Err(e) => {
                    warn!(slot, error = %e, "renewing group coordinator lease failed");
                    let mut held = lock(&self.held);
                    if held[slot as usize]
                        .as_ref()
                        .is_some_and(|h| Instant::now() >= h.valid_until)
                    {
                        held[slot as usize] = None;
                        report.dropped.push(slot);
                    } else {
                        report.owned.push(slot);
                    }
                }
            }
        }
        if self.config.coordinates {
            // A replica at its share still takes over slots whose owner stopped renewing (their
            // last-read lease looks expired; the takeover itself still waits for a full TTL of
            // unchanged sightings): the replica that would take them instead may have started
            // watching them only now (it just started, so the shares just shrank) and would
            // leave their groups without a coordinator for another TTL. The surplus goes back
            // to the others through the release below, from the next round on.
            let wall_now = self.catalog.wall_now_ms();
            let abandoned: Vec<bool> = lock(&self.owners)
                .iter()
                .map(|l| {
                    l.as_ref().is_some_and(|l| {
                        l.owner != self.owner_id && !l.released && l.expires_at_ms <= wall_now
                    })
                })
                .collect();
            for slot in 0..GROUP_SLOTS {
                if report.owned.len() >= target && !abandoned[slot as usize] {
                    continue;
                }
                if lock(&self.held)[slot as usize].is_some() || report.dropped.contains(&slot) {
                    continue;
                }
                let started = Instant::now();
                match self.take(slot).await {
                    Ok(Some((lease, version))) => {
                        info!(
                            slot,
                            epoch = lease.epoch,
                            "acquired group coordinator lease"
                        );
                        lock(&self.held)[slot as usize] = Some(Held {
                            version,
                            epoch: lease.epoch,
                            valid_until: started + self.config.ttl.mul_f64(0.8),
                        });
                        report.owned.push(slot);
                        report.acquired.push(slot);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(slot, error = %e, "taking group coordinator lease failed");
                        break;
                    }
                }
            }
        }
        report.owned.sort_unstable();
        // Above the share: give up the highest slots, but not those just taken over (their
        // groups have only now found a coordinator again).
        let mut releasable: Vec<u32> = report
            .owned
            .iter()
            .copied()
            .filter(|s| !report.acquired.contains(s))
            .collect();
        while report.owned.len() > target.max(1) {
            let Some(slot) = releasable.pop() else {
                break;
            };
            report.owned.retain(|s| *s != slot);
            let Some(held) = lock(&self.held)[slot as usize].take() else {
                continue;
            };
            match self
                .catalog
                .release_lease(&slot_lease_name(slot), &self.owner_id, held.version)
                .await
            {
                Ok(_) => info!(
                    slot,
                    epoch = held.epoch,
                    "released group coordinator lease to balance replicas"
                ),
                Err(e) => {
                    warn!(slot, error = %e, "releasing group coordinator lease failed; it expires by itself")
                }
            }
            report.dropped.push(slot);
        }
        if let Err(e) = self.refresh_owners().await {
            warn!(error = %e, "reading group coordinator leases failed");
        }
        report
    }

    /// Gives up every slot (clean shutdown) and stops counting as a live replica, so the
    /// others take the slots over at their next round.
    pub(crate) async fn release_all(&self) {
        let _round = self.round.lock().await;
        // Stop counting as live first: the others aim at their shares of the live replicas,
        // and would leave the released slots alone until this heartbeat expired.
        let kind = if self.config.coordinates {
            MEMBER_KIND
        } else {
            NON_COORDINATOR_MEMBER_KIND
        };
        if let Err(e) = self
            .catalog
            .heartbeat_member(kind, &self.owner_id, &self.owner_addr, Duration::ZERO)
            .await
        {
            warn!(error = %e, "ending this replica's heartbeat failed; it expires by itself");
        }
        let held: Vec<(u32, Held)> = lock(&self.held)
            .iter_mut()
            .enumerate()
            .filter_map(|(s, h)| h.take().map(|h| (s as u32, h)))
            .collect();
        for (slot, h) in held {
            if let Err(e) = self
                .catalog
                .release_lease(&slot_lease_name(slot), &self.owner_id, h.version)
                .await
            {
                warn!(slot, error = %e, "releasing group coordinator lease failed");
            }
        }
    }

    /// The renewal period: a third of the lease time, as the indexer renews its shards. A
    /// slot is served for 0.8 TTL after a renewal began, so one failed renewal is retried in
    /// time; every renewal is a write unit per slot (16 slots at TTL/3 and a 10 s TTL: 4.8
    /// units a second per cluster, docs/cost.md).
    pub(crate) fn renew_interval(&self) -> Duration {
        self.config.ttl / 3
    }

    /// One round: heartbeat, aim at an even share of the slots among live coordinating
    /// replicas, forget the groups of dropped slots, publish the peers to Metadata.
    pub(crate) async fn round(&self, groups: &GroupCoordinator, topics: &TopicApi) {
        let slots = GROUP_SLOTS as usize;
        let target = if !self.config.coordinates {
            self.heartbeat_as_non_coordinator().await;
            0
        } else {
            match self
                .catalog
                .heartbeat_member(
                    MEMBER_KIND,
                    &self.owner_id,
                    &self.owner_addr,
                    self.config.ttl,
                )
                .await
            {
                Ok(()) => match self.catalog.live_members(MEMBER_KIND).await {
                    Ok(members) => slots.div_ceil(members.len().max(1)),
                    Err(_) => slots,
                },
                Err(e) => {
                    warn!(error = %e, "group coordinator heartbeat failed");
                    slots
                }
            }
        };
        let report = self.maintain(target).await;
        if !report.dropped.is_empty() {
            groups.forget(|g| report.dropped.contains(&group_slot(g)));
        }
        if !report.acquired.is_empty() || !report.dropped.is_empty() {
            info!(owned = ?report.owned, acquired = ?report.acquired, dropped = ?report.dropped, "group coordinator slots changed");
        }
        topics.set_peers(self.peers());
    }

    /// Shows a replica that coordinates nothing (an ingest gateway) alive, under
    /// [`NON_COORDINATOR_MEMBER_KIND`]; it is not counted when coordinators share the slots.
    async fn heartbeat_as_non_coordinator(&self) {
        if let Err(e) = self
            .catalog
            .heartbeat_member(
                NON_COORDINATOR_MEMBER_KIND,
                &self.owner_id,
                &self.owner_addr,
                self.config.ttl,
            )
            .await
        {
            warn!(error = %e, "gateway heartbeat failed");
        }
    }

    /// Keeps the slots until `shutdown`, then releases them. Also runs the groups' deadline
    /// ticks.
    pub(crate) async fn run(
        self: Arc<Self>,
        groups: Arc<GroupCoordinator>,
        topics: TopicApi,
        shutdown: CancellationToken,
    ) {
        let mut renew = tokio::time::interval(self.renew_interval());
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = renew.tick() => self.round(&groups, &topics).await,
                _ = tick.tick() => {
                    groups.tick(Instant::now());
                    // A slot whose validity ran out (renewals failing) stops being served.
                    let expired: Vec<u32> = {
                        let mut held = lock(&self.held);
                        let now = Instant::now();
                        held.iter_mut()
                            .enumerate()
                            .filter_map(|(s, h)| {
                                if h.as_ref().is_some_and(|h| now >= h.valid_until) {
                                    *h = None;
                                    Some(s as u32)
                                } else {
                                    None
                                }
                            })
                            .collect()
                    };
                    if !expired.is_empty() {
                        warn!(slots = ?expired, "group coordinator leases could not be renewed in time; their groups are no longer served here");
                        groups.forget(|g| expired.contains(&group_slot(g)));
                    }
                }
            }
        }
        // Members waiting in a join or sync learn at once that this coordinator is going
        // (NOT_COORDINATOR), and find the replica that takes the slots over.
        groups.forget(|_| true);
        self.release_all().await;
    }
}

#[cfg(test)]
mod sim;

/// Tests of the slot leases, on tokio's paused clock: realistic lease times (10 to 30 s) pass
/// in no wall time, and the catalogs' wall clock follows the paused one, so member heartbeats
/// and lease expiries age as the test advances time. Each replica has its own catalog (its own
/// lease sightings) over one shared store, as separate processes do.
#[cfg(test)]
mod tests {
    use kafscale_shared::catalog::{CommittedOffset, ITEM_FORMAT, WallClock};
    use kafscale_shared::meta_store::{MemoryMetaStore, MetaStore, MetaStoreError};
    use kafscale_shared::topic_api::{TopicSettings, node_id_for_addr};
    use uuid::Uuid;

    use super::*;

    /// One process's view of the shared metadata store, its wall clock moving with the
    /// paused one.
    fn catalog(store: &Arc<dyn MetaStore>) -> Arc<Catalog> {
        Arc::new(Catalog::new(store.clone()).with_wall_clock(WallClock::follows_tokio()))
    }

    fn replica(store: &Arc<dyn MetaStore>, port: i32, ttl: Duration) -> (GroupLeases, TopicApi) {
        replica_with_clock(store, port, ttl, WallClock::follows_tokio())
    }

    /// A coordinating replica with its own catalog over `store`. Replicas started at different
    /// (simulated) times must share one `clock`: a clock made later is behind by the time
    /// between, like a machine whose clock lags.
    pub(super) fn replica_with_clock(
        store: &Arc<dyn MetaStore>,
        port: i32,
        ttl: Duration,
        clock: WallClock,
    ) -> (GroupLeases, TopicApi) {
        let catalog = Arc::new(Catalog::new(store.clone()).with_wall_clock(clock));
        let addr = format!("127.0.0.1:{port}");
        let topics = TopicApi::new(
            catalog.clone(),
            TopicSettings {
                advertised_host: "127.0.0.1".into(),
                advertised_port: port,
                auto_create_topics: false,
                default_partitions: 1,
                cluster_id: "t".into(),
                node_id: node_id_for_addr(&addr),
            },
        );
        let leases = GroupLeases::new(
            catalog.clone(),
            topics.settings().broker(),
            GroupLeaseConfig {
                coordinates: true,
                ttl,
                owner_id: None,
                coordinator_addr: None,
            },
        );
        (leases, topics)
    }

    fn offset(n: i64) -> CommittedOffset {
        CommittedOffset {
            format: ITEM_FORMAT,
            topic: "t".into(),
            offset: n,
            leader_epoch: -1,
            metadata: None,
            committed_at_ms: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_split_the_slots_and_a_deposed_owner_cannot_write() {
        let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
        let catalog = catalog(&store);
        let groups = GroupCoordinator::new(Default::default());
        let ttl = Duration::from_secs(30);
        let (a, a_topics) = replica(&store, 1001, ttl);
        let (b, b_topics) = replica(&store, 1002, ttl);
        a.round(&groups, &a_topics).await;
        let everything: Vec<u32> = (0..GROUP_SLOTS).collect();
        assert_eq!(a.maintain(GROUP_SLOTS as usize).await.owned, everything);
        let group = "orders";
        let old_fence = a.fence(group).expect("a coordinates every group");
        assert_eq!(b.coordinator(group).await, Some(a.me.clone()));

        // b joins: each aims at half; a gives up the upper half, b takes it.
        b.round(&groups, &b_topics).await;
        a.round(&groups, &a_topics).await;
        b.round(&groups, &b_topics).await;
        let (a_owned, b_owned): (Vec<u32>, Vec<u32>) = (
            (0..GROUP_SLOTS)
                .filter(|s| lock(&a.held)[*s as usize].is_some())
                .collect(),
            (0..GROUP_SLOTS)
                .filter(|s| lock(&b.held)[*s as usize].is_some())
                .collect(),
        );
        assert_eq!(
            a_owned.len() + b_owned.len(),
            GROUP_SLOTS as usize,
            "{a_owned:?} {b_owned:?}"
        );
        assert_eq!(a_owned.len(), b_owned.len());
        assert!(a_owned.iter().all(|s| !b_owned.contains(s)));
        // Metadata of each lists both coordinators (as of its last round).
        a.round(&groups, &a_topics).await;
        for peers in [a.peers(), b.peers()] {
            assert_eq!(peers.len(), 2, "{peers:?}");
            assert!(peers.contains(&a.me) && peers.contains(&b.me), "{peers:?}");
        }

        // Find a group in a slot that moved to b: a's old fence for it no longer writes.
        let moved = (0..1000)
            .map(|i| format!("group-{i}"))
            .find(|g| b_owned.contains(&group_slot(g)))
            .expect("some group hashes to b");
        let stale = LeaseFence {
            name: slot_lease_name(group_slot(&moved)),
            version: old_fence.version,
        };
        assert!(!a.owns(&moved));
        assert_eq!(a.coordinator(&moved).await, Some(b.me.clone()));
        let write = catalog
            .commit_offsets(&moved, vec![(Uuid::nil(), 0, offset(1))], Some(&stale))
            .await;
        assert!(
            matches!(
                write,
                Err(CatalogError::Store(MetaStoreError::ConditionFailed { .. }))
            ),
            "{write:?}"
        );
        let fence = b.fence(&moved).expect("b coordinates it");
        catalog
            .commit_offsets(&moved, vec![(Uuid::nil(), 0, offset(2))], Some(&fence))
            .await
            .expect("the owner writes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_coordinates_nothing_heartbeats_as_a_gateway() {
        let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
        let catalog = catalog(&store);
        let groups = GroupCoordinator::new(Default::default());
        let ttl = Duration::from_secs(30);
        let (coordinator, c_topics) = replica(&store, 1001, ttl);
        let (_, i_topics) = replica(&store, 1002, ttl);
        let ingest = GroupLeases::new(
            catalog.clone(),
            i_topics.settings().broker(),
            GroupLeaseConfig {
                coordinates: false,
                ttl,
                owner_id: None,
                coordinator_addr: None,
            },
        );
        coordinator.round(&groups, &c_topics).await;
        ingest.round(&groups, &i_topics).await;
        let gateways = catalog
            .live_members(NON_COORDINATOR_MEMBER_KIND)
            .await
            .expect("read");
        assert_eq!(gateways.len(), 1, "{gateways:?}");
        assert_eq!(gateways[0].owner_addr, "127.0.0.1:1002");
        assert!(gateways[0].owner.starts_with("ingest-"), "{gateways:?}");
        // It does not count as a coordinator: the one coordinator keeps every slot.
        let coordinators = catalog.live_members(MEMBER_KIND).await.expect("read");
        assert_eq!(coordinators.len(), 1);
        coordinator.round(&groups, &c_topics).await;
        assert!((0..GROUP_SLOTS).all(|s| lock(&coordinator.held)[s as usize].is_some()));
        assert!(!ingest.owns("g"));
    }

    /// The slots `r` serves right now.
    fn served(r: &GroupLeases) -> Vec<u32> {
        let now = Instant::now();
        (0..GROUP_SLOTS)
            .filter(|s| {
                lock(&r.held)[*s as usize]
                    .as_ref()
                    .is_some_and(|h| now < h.valid_until)
            })
            .collect()
    }

    /// Found by the lease simulation: a survivor at its share did not take over a dead
    /// replica's slots once a new replica had started (the shares shrank), and the newcomer
    /// could take them only a full TTL after it first saw them, so their groups had no
    /// coordinator for up to about three TTLs.
    #[tokio::test(start_paused = true)]
    async fn a_replica_at_its_share_takes_over_a_dead_replicas_slots_while_a_newcomer_watches() {
        let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
        let groups = GroupCoordinator::new(Default::default());
        let ttl = Duration::from_secs(10);
        let (a, a_topics) = replica(&store, 1001, ttl);
        let (b, b_topics) = replica(&store, 1002, ttl);
        let (c, c_topics) = replica(&store, 1003, ttl);
        a.round(&groups, &a_topics).await;
        b.round(&groups, &b_topics).await;
        a.round(&groups, &a_topics).await;
        b.round(&groups, &b_topics).await;
        let a_slots = served(&a);
        assert_eq!((a_slots.len(), served(&b).len()), (8, 8), "a and b share");
        // a dies now; b keeps renewing every TTL/4; c starts 0.75 TTL later, shrinking the
        // shares before a's heartbeat has expired.
        let died = Instant::now();
        for k in 1..=5u32 {
            tokio::time::sleep_until(died + ttl / 4 * k).await;
            b.round(&groups, &b_topics).await;
            if k >= 3 {
                c.round(&groups, &c_topics).await;
            }
        }
        // a stopped serving at 0.8 TTL; 1.25 TTL after its death its slots are served again.
        assert!(served(&a).is_empty());
        let (b_now, c_now) = (served(&b), served(&c));
        for slot in &a_slots {
            assert!(
                b_now.contains(slot) != c_now.contains(slot),
                "a's slot {slot} has no coordinator 1.25 TTL after a died: b {b_now:?}, c {c_now:?}"
            );
        }
        // Later rounds balance the slots again (through releases, taken over at once).
        for k in 6..=10u32 {
            tokio::time::sleep_until(died + ttl / 4 * k).await;
            b.round(&groups, &b_topics).await;
            c.round(&groups, &c_topics).await;
        }
        let (b_now, c_now) = (served(&b), served(&c));
        assert_eq!(
            (b_now.len(), c_now.len()),
            (8, 8),
            "b {b_now:?}, c {c_now:?}"
        );
    }

    /// Found by the lease simulation: a replica that stopped cleanly released its slots but
    /// still counted as live until its heartbeat expired, so the others, at their share, left
    /// the released slots without a coordinator for up to a TTL.
    #[tokio::test(start_paused = true)]
    async fn the_slots_of_a_cleanly_stopped_replica_are_taken_over_at_the_next_round() {
        let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
        let groups = GroupCoordinator::new(Default::default());
        let ttl = Duration::from_secs(10);
        let (a, a_topics) = replica(&store, 1001, ttl);
        let (b, b_topics) = replica(&store, 1002, ttl);
        let (c, c_topics) = replica(&store, 1003, ttl);
        for _ in 0..3 {
            a.round(&groups, &a_topics).await;
            b.round(&groups, &b_topics).await;
            c.round(&groups, &c_topics).await;
        }
        let c_slots = served(&c);
        assert_eq!(
            served(&a).len() + served(&b).len() + c_slots.len(),
            GROUP_SLOTS as usize
        );
        assert!(!c_slots.is_empty());
        c.release_all().await;
        tokio::time::sleep(ttl / 4).await;
        a.round(&groups, &a_topics).await;
        b.round(&groups, &b_topics).await;
        let (a_now, b_now) = (served(&a), served(&b));
        for slot in &c_slots {
            assert!(
                a_now.contains(slot) != b_now.contains(slot),
                "c's released slot {slot} was not taken over at the next round: a {a_now:?}, b {b_now:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_slots_of_a_dead_replica_move_once_their_leases_stood_unchanged_for_a_ttl() {
        let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
        let groups = GroupCoordinator::new(Default::default());
        let ttl = Duration::from_secs(10);
        let (a, a_topics) = replica(&store, 1001, ttl);
        let (b, b_topics) = replica(&store, 1002, ttl);
        let start = Instant::now();
        a.round(&groups, &a_topics).await;
        b.round(&groups, &b_topics).await;
        assert!(a.owns("g"), "a took every slot first");
        assert!(!b.owns("g"));
        // a dies (no more rounds): it stops serving 0.8 × TTL after its last renewal began.
        tokio::time::sleep_until(start + ttl.mul_f64(0.8) - Duration::from_millis(1)).await;
        assert!(
            a.owns("g"),
            "a still serves within 0.8 × TTL of its renewal"
        );
        tokio::time::sleep_until(start + ttl.mul_f64(0.8)).await;
        assert!(
            !a.owns("g"),
            "a stops serving once its lease may have expired"
        );
        // b, which has read a's leases, takes over once they have stood unchanged for a lease
        // time of its own clock, and not before.
        tokio::time::sleep_until(start + ttl - Duration::from_millis(1)).await;
        b.round(&groups, &b_topics).await;
        assert!(
            !b.owns("g"),
            "a's lease has not stood unchanged for a TTL yet"
        );
        tokio::time::sleep_until(start + ttl + Duration::from_millis(100)).await;
        b.round(&groups, &b_topics).await;
        assert!(b.owns("g"));
        assert!(
            (0..GROUP_SLOTS).all(|s| lock(&b.held)[s as usize].is_some()),
            "a's heartbeat has expired too: b, the only live coordinator, takes every slot"
        );
        assert_eq!(a.coordinator("g").await, Some(b.me.clone()));
    }
}
