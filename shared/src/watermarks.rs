//! High-watermark notifications.
//!
//! The sequencer publishes every partition's new offsets after a commit; fetch long-polls
//! subscribe and wake as soon as a watermark moves instead of sleeping. In standalone mode the
//! indexer and fetch tier share one [`Watermarks`]; a distributed fetch gateway feeds its own
//! from the indexers' change feeds ([`WatermarkFeed`], served over HTTP) and, as the fallback
//! that bounds staleness, by polling the store.
//!
//! The change feed: an indexer's `Watermarks` is built [`with_journal`](Watermarks::with_journal)
//! and numbers every change; a reader asks for the changes after the last number it saw and
//! waits for new ones. The journal is bounded; a reader that fell behind it is told so
//! (`complete: false`) and relies on the store for what it missed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

/// A partition's readable range: `[log_start_offset, high_watermark)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffsets {
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

/// One partition's new offsets, as carried by the change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkChange {
    pub topic_id: Uuid,
    pub partition: i32,
    pub offsets: PartitionOffsets,
}

/// An answer of the change feed: the changes numbered `after + 1 ..= seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkFeed {
    /// Identifies the journal (one per process start): numbers of another journal mean nothing.
    pub journal: Uuid,
    /// The number of the last change included (the `after` of the next request).
    pub seq: u64,
    /// False if changes after the requested number were already dropped from the journal.
    pub complete: bool,
    pub changes: Vec<WatermarkChange>,
}

/// Latest known offsets per partition, with change notification.
#[derive(Debug, Default)]
pub struct Watermarks {
    partitions: Mutex<HashMap<(Uuid, i32), Entry>>,
    journal: Option<Journal>,
}

/// The numbered, bounded list of recent changes (see the module docs).
#[derive(Debug)]
struct Journal {
    id: Uuid,
    capacity: usize,
    entries: Mutex<VecDeque<(u64, WatermarkChange)>>,
    /// The number of the latest change; readers wait on it.
    seq: watch::Sender<u64>,
}

#[derive(Debug)]
struct Entry {
    tx: watch::Sender<PartitionOffsets>,
    /// When the offsets were last confirmed (published), for readers that poll the store.
    confirmed_at: Instant,
}

impl Watermarks {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry that also keeps a change feed of its last `capacity` changes (an indexer's).
    pub fn with_journal(capacity: usize) -> Self {
        Watermarks {
            partitions: Mutex::default(),
            journal: Some(Journal {
                id: Uuid::new_v4(),
                capacity: capacity.max(1),
                entries: Mutex::new(VecDeque::new()),
                seq: watch::Sender::new(0),
            }),
        }
    }

    /// Records new offsets; watermarks only move forward, so a stale publish is ignored.
    pub fn publish(&self, topic_id: Uuid, partition: i32, offsets: PartitionOffsets) {
        self.update(topic_id, partition, offsets, true);
    }

    /// Like [`publish`](Self::publish), but only for a partition this registry already tracks
    /// (a fetch gateway applying an indexer's feed keeps only the partitions it serves).
    pub fn advance_known(&self, topic_id: Uuid, partition: i32, offsets: PartitionOffsets) {
        self.update(topic_id, partition, offsets, false);
    }

    fn update(&self, topic_id: Uuid, partition: i32, offsets: PartitionOffsets, insert: bool) {
        let mut map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let (changed, now) = match map.get_mut(&(topic_id, partition)) {
            Some(entry) => {
                entry.confirmed_at = Instant::now();
                let mut now = offsets;
                let changed = entry.tx.send_if_modified(|cur| {
                    let next = PartitionOffsets {
                        log_start_offset: cur.log_start_offset.max(offsets.log_start_offset),
                        high_watermark: cur.high_watermark.max(offsets.high_watermark),
                    };
                    let changed = next != *cur;
                    *cur = next;
                    now = next;
                    changed
                });
                (changed, now)
            }
            None if insert => {
                let entry = Entry {
                    tx: watch::Sender::new(offsets),
                    confirmed_at: Instant::now(),
                };
                map.insert((topic_id, partition), entry);
                (true, offsets)
            }
            None => (false, offsets),
        };
        drop(map);
        if changed && let Some(journal) = &self.journal {
            journal.append(WatermarkChange {
                topic_id,
                partition,
                offsets: now,
            });
        }
    }

    /// The changes after number `after` (at most `max`), waiting up to `wait` for one if there
    /// are none yet. `None` if this registry keeps no journal.
    pub async fn changes_after(
        &self,
        after: Option<u64>,
        max: usize,
        wait: Duration,
    ) -> Option<WatermarkFeed> {
        let journal = self.journal.as_ref()?;
        let mut rx = journal.seq.subscribe();
        // No position yet: start from now.
        let after = after.unwrap_or(*rx.borrow());
        let _ = tokio::time::timeout(wait, rx.wait_for(|seq| *seq > after)).await;
        Some(journal.read(after, max))
    }
}

impl Journal {
    fn append(&self, change: WatermarkChange) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let seq = *self.seq.borrow() + 1;
        entries.push_back((seq, change));
        while entries.len() > self.capacity {
            entries.pop_front();
        }
        // Under the entries lock, so numbers are published in order.
        self.seq.send_replace(seq);
    }

    fn read(&self, after: u64, max: usize) -> WatermarkFeed {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let latest = *self.seq.borrow();
        let after = after.min(latest);
        let oldest = entries.front().map_or(latest + 1, |(seq, _)| *seq);
        let picked: Vec<&(u64, WatermarkChange)> = entries
            .iter()
            .skip_while(|(seq, _)| *seq <= after)
            .take(max.max(1))
            .collect();
        WatermarkFeed {
            journal: self.id,
            seq: picked.last().map_or(after, |(seq, _)| *seq),
            complete: oldest <= after + 1,
            changes: picked.iter().map(|(_, c)| *c).collect(),
        }
    }
}

impl Watermarks {
    /// The latest known offsets, if any were published.
    pub fn get(&self, topic_id: Uuid, partition: i32) -> Option<PartitionOffsets> {
        let map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(topic_id, partition)).map(|e| *e.tx.borrow())
    }

    /// The latest offsets if they were confirmed within `max_age`.
    pub fn get_fresh(
        &self,
        topic_id: Uuid,
        partition: i32,
        max_age: Duration,
    ) -> Option<PartitionOffsets> {
        let map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(topic_id, partition))
            .filter(|e| e.confirmed_at.elapsed() < max_age)
            .map(|e| *e.tx.borrow())
    }

    /// Partitions someone is waiting on (a long poll holds a receiver) whose offsets were not
    /// confirmed within `max_age`: what a store poller should refresh.
    pub fn stale_watched(&self, max_age: Duration) -> Vec<(Uuid, i32)> {
        let map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(_, e)| e.tx.receiver_count() > 0 && e.confirmed_at.elapsed() >= max_age)
            .map(|(k, _)| *k)
            .collect()
    }

    /// A receiver that wakes on every change of the partition's offsets.
    pub fn subscribe(
        &self,
        topic_id: Uuid,
        partition: i32,
    ) -> Option<watch::Receiver<PartitionOffsets>> {
        let map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(topic_id, partition)).map(|e| e.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hw: i64) -> PartitionOffsets {
        PartitionOffsets {
            log_start_offset: 0,
            high_watermark: hw,
        }
    }

    #[tokio::test]
    async fn the_journal_numbers_changes_and_reports_gaps() {
        let w = Watermarks::with_journal(3);
        let id = Uuid::new_v4();
        let start = w
            .changes_after(None, 100, Duration::ZERO)
            .await
            .expect("journal");
        assert_eq!(
            (start.seq, start.complete, start.changes.len()),
            (0, true, 0)
        );
        w.publish(id, 0, at(5));
        w.publish(id, 0, at(4)); // backwards: no change, no entry
        w.publish(id, 1, at(7));
        let feed = w
            .changes_after(Some(0), 100, Duration::ZERO)
            .await
            .expect("journal");
        assert_eq!(feed.seq, 2);
        assert!(feed.complete);
        assert_eq!(
            feed.changes
                .iter()
                .map(|c| (c.partition, c.offsets.high_watermark))
                .collect::<Vec<_>>(),
            vec![(0, 5), (1, 7)]
        );
        // Paging: at most `max` per answer, continued from `seq`.
        let page = w
            .changes_after(Some(0), 1, Duration::ZERO)
            .await
            .expect("journal");
        assert_eq!((page.seq, page.changes.len()), (1, 1));
        // A waiting reader wakes on the next change.
        let waiter = w.changes_after(Some(2), 100, Duration::from_secs(30));
        let (feed, ()) = tokio::join!(waiter, async { w.publish(id, 0, at(9)) });
        let feed = feed.expect("journal");
        assert_eq!((feed.seq, feed.changes.len()), (3, 1));
        // Past the capacity the oldest changes are gone: a reader that far behind is told.
        w.publish(id, 0, at(10));
        w.publish(id, 0, at(11));
        let behind = w
            .changes_after(Some(0), 100, Duration::ZERO)
            .await
            .expect("journal");
        assert!(!behind.complete);
        assert_eq!(behind.seq, 5);
        assert_eq!(behind.changes.len(), 3);
        // A registry without a journal has no feed; advance_known ignores unknown partitions.
        let plain = Watermarks::new();
        assert!(plain.changes_after(None, 1, Duration::ZERO).await.is_none());
        plain.advance_known(id, 0, at(3));
        assert_eq!(plain.get(id, 0), None);
        plain.publish(id, 0, at(1));
        plain.advance_known(id, 0, at(3));
        assert_eq!(plain.get(id, 0), Some(at(3)));
    }

    #[tokio::test]
    async fn subscribers_wake_when_the_watermark_moves_forward_only() {
        let w = Watermarks::new();
        let id = Uuid::new_v4();
        w.publish(
            id,
            0,
            PartitionOffsets {
                log_start_offset: 0,
                high_watermark: 5,
            },
        );
        let mut rx = w.subscribe(id, 0).expect("published");
        w.publish(
            id,
            0,
            PartitionOffsets {
                log_start_offset: 0,
                high_watermark: 3,
            },
        );
        assert!(!rx.has_changed().expect("open"));
        w.publish(
            id,
            0,
            PartitionOffsets {
                log_start_offset: 0,
                high_watermark: 9,
            },
        );
        rx.changed().await.expect("open");
        assert_eq!(rx.borrow().high_watermark, 9);
        assert_eq!(w.get(id, 0).map(|o| o.high_watermark), Some(9));
        assert!(w.get_fresh(id, 0, Duration::from_secs(60)).is_some());
        assert!(
            w.stale_watched(Duration::from_secs(60)).is_empty(),
            "just confirmed"
        );
        assert_eq!(
            w.stale_watched(Duration::ZERO),
            vec![(id, 0)],
            "watched by rx"
        );
        drop(rx);
        assert!(
            w.stale_watched(Duration::ZERO).is_empty(),
            "nobody waits any more"
        );
    }
}
