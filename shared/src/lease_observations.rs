//! When a replica may take over a lease another replica holds, judged on its own clock only.
//!
//! A lease holder stops serving on its own monotonic clock, 0.8 × TTL after its last renewal
//! began. Comparing the holder's wall-clock expiry with the taker's wall clock would make safety
//! depend on the two machines' clocks: a taker whose clock ran more than 0.2 × TTL ahead would
//! take the lease while the holder still served (two coordinators for one consumer group). So a
//! taker watches the lease item instead, as Chubby and etcd do: it may take the lease once it has
//! seen the same item version (nothing renewed it in between) for a full TTL of its own
//! monotonic clock, counted from the first time it read that version. The holder's last renewal
//! began before that first read, so the holder has stopped serving by then, whatever either wall
//! clock says (only the clocks' rates must roughly agree). A lease its owner released, or one
//! never written, is free at once.
//!
//! Every read of a lease through the [`Catalog`](crate::catalog::Catalog) counts as a sighting,
//! so a replica that reads the leases each round (to route, or to watch for work to take over)
//! starts waiting before it needs the lease. Time is [`tokio::time::Instant`], which tests pause
//! and advance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::catalog::LeaseRecord;

/// The item version of each lease this process has read, and since when it has seen it.
#[derive(Debug, Default)]
pub struct LeaseObservations {
    seen: Mutex<HashMap<String, Sighting>>,
}

#[derive(Debug, Clone, Copy)]
struct Sighting {
    version: u64,
    first_seen: Instant,
}

impl LeaseObservations {
    /// Notes that lease `name` was read at item `version` just now. Returns how long this
    /// process has seen that version unchanged: zero the first time.
    pub fn observe(&self, name: &str, version: u64) -> Duration {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(name) {
            Some(s) if s.version == version => now.saturating_duration_since(s.first_seen),
            _ => {
                let sighting = Sighting {
                    version,
                    first_seen: now,
                };
                seen.insert(name.to_string(), sighting);
                Duration::ZERO
            }
        }
    }

    /// Forgets lease `name`: this process just wrote it, so whatever version it reads next is
    /// a new sighting.
    pub fn forget(&self, name: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Whether `lease`, held by another owner and read just now at item `version`, may be taken
    /// over: its owner released it, or this process has seen that version unchanged for the
    /// longer of the lease's TTL and `own_ttl`.
    pub fn may_take_over(
        &self,
        name: &str,
        lease: &LeaseRecord,
        version: u64,
        own_ttl: Duration,
    ) -> bool {
        if lease.released {
            return true;
        }
        let unchanged_for = self.observe(name, version);
        let needed = own_ttl.max(lease.ttl());
        if unchanged_for < needed {
            debug!(
                lease = name,
                holder = lease.owner,
                version,
                unchanged_ms = unchanged_for.as_millis() as u64,
                needed_ms = needed.as_millis() as u64,
                "lease held by another owner: not unchanged for a lease time yet"
            );
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::time::Instant;

    use crate::catalog::{Catalog, lease_key};
    use crate::meta_store::{Condition, MemoryMetaStore, MetaStore, WriteOp};

    const LEASE: &str = "groups/000";
    const TTL: Duration = Duration::from_secs(10);
    /// The taker's wall clock runs an hour ahead of the holder's.
    const SKEW_MS: i64 = 3_600_000;

    fn two_replicas() -> (Catalog, Catalog) {
        let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
        let holder = Catalog::new(store.clone());
        let taker = Catalog::new(store).with_wall_clock_skew_ms(SKEW_MS);
        (holder, taker)
    }

    /// Takes or renews [`LEASE`] for `owner`; its epoch if that worked.
    async fn acquire(catalog: &Catalog, owner: &str, ttl: Duration) -> Option<u64> {
        catalog
            .acquire_lease(LEASE, owner, &format!("{owner}:9092"), ttl)
            .await
            .expect("store")
            .map(|(lease, _)| lease.epoch)
    }

    #[tokio::test(start_paused = true)]
    async fn a_taker_whose_clock_runs_ahead_waits_a_full_lease_time_of_its_own_clock() {
        let (holder, taker) = two_replicas();
        // The holder serves until 0.8 × TTL after its renewal began (as the group
        // coordinator does).
        let renewal_started = Instant::now();
        assert_eq!(acquire(&holder, "holder", TTL).await, Some(1));
        let holder_serves_until = renewal_started + TTL.mul_f64(0.8);

        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(Instant::now() < holder_serves_until);
        assert_eq!(
            acquire(&taker, "taker", TTL).await,
            None,
            "the holder still serves: its lease must not be taken, whatever the wall clocks say"
        );
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert_eq!(acquire(&taker, "taker", TTL).await, None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(Instant::now() >= holder_serves_until);
        assert_eq!(
            acquire(&taker, "taker", TTL).await,
            Some(2),
            "unchanged for a full lease time of the taker's clock: taken, with a new epoch"
        );
        assert_eq!(
            acquire(&holder, "holder", TTL).await,
            None,
            "the old holder cannot renew"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_taken_at_once() {
        let (holder, taker) = two_replicas();
        assert_eq!(acquire(&holder, "holder", TTL).await, Some(1));
        assert_eq!(acquire(&taker, "taker", TTL).await, None);
        let (_, version) = holder.lease(LEASE).await.expect("read").expect("lease");
        assert!(
            holder
                .release_lease(LEASE, "holder", version)
                .await
                .expect("release")
        );
        assert_eq!(acquire(&taker, "taker", TTL).await, Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_starts_the_takers_wait_again() {
        let (holder, taker) = two_replicas();
        assert_eq!(acquire(&holder, "holder", TTL).await, Some(1));
        assert_eq!(acquire(&taker, "taker", TTL).await, None);
        tokio::time::advance(TTL.mul_f64(0.6)).await;
        assert_eq!(acquire(&holder, "holder", TTL).await, Some(1), "renewed");
        tokio::time::advance(TTL.mul_f64(0.6)).await;
        assert_eq!(
            acquire(&taker, "taker", TTL).await,
            None,
            "a lease time since the first sighting, but the lease changed meanwhile"
        );
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert_eq!(acquire(&taker, "taker", TTL).await, None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(acquire(&taker, "taker", TTL).await, Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_longer_of_the_holders_and_the_takers_lease_time_counts() {
        let (holder, taker) = two_replicas();
        assert_eq!(acquire(&holder, "holder", 3 * TTL).await, Some(1));
        assert_eq!(acquire(&taker, "taker", TTL).await, None);
        tokio::time::advance(TTL).await;
        assert_eq!(
            acquire(&taker, "taker", TTL).await,
            None,
            "the holder renews for 3 × TTL"
        );
        tokio::time::advance(2 * TTL).await;
        assert_eq!(acquire(&taker, "taker", TTL).await, Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_from_an_older_version_is_taken_after_the_takers_lease_time() {
        let (_, taker) = two_replicas();
        // Written before records carried their lease time and release marker.
        let old = r#"{"format":1,"owner":"old","owner_addr":"old:9092","epoch":3,"expires_at_ms":4102444800000}"#;
        taker
            .store()
            .write(vec![WriteOp::Put {
                key: lease_key(LEASE),
                value: Bytes::from_static(old.as_bytes()),
                condition: Condition::Absent,
            }])
            .await
            .expect("write");
        let (record, _) = taker.lease(LEASE).await.expect("read").expect("lease");
        assert_eq!((record.ttl_ms, record.released), (0, false));
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert_eq!(acquire(&taker, "taker", TTL).await, None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(acquire(&taker, "taker", TTL).await, Some(4));
    }

    #[tokio::test(start_paused = true)]
    async fn an_owner_renews_its_own_lease_at_once_after_a_restart() {
        let store: Arc<dyn MetaStore> = Arc::new(MemoryMetaStore::new());
        let before = Catalog::new(store.clone());
        assert_eq!(acquire(&before, "standalone", TTL).await, Some(1));
        let after_restart = Catalog::new(store);
        assert_eq!(acquire(&after_restart, "standalone", TTL).await, Some(1));
    }
}
