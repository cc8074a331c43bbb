//! High-watermark notifications.
//!
//! The sequencer publishes every partition's new offsets after a commit; fetch long-polls
//! subscribe and wake as soon as a watermark moves instead of sleeping. In standalone mode the
//! indexer and fetch tier share one [`Watermarks`]; a distributed fetch gateway feeds its own
//! from the indexer or by polling the store, through the same `publish`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use uuid::Uuid;

/// A partition's readable range: `[log_start_offset, high_watermark)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

/// Latest known offsets per partition, with change notification.
#[derive(Debug, Default)]
pub struct Watermarks {
    partitions: Mutex<HashMap<(Uuid, i32), Entry>>,
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

    /// Records new offsets; watermarks only move forward, so a stale publish is ignored.
    pub fn publish(&self, topic_id: Uuid, partition: i32, offsets: PartitionOffsets) {
        let mut map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&(topic_id, partition)) {
            Some(entry) => {
                entry.confirmed_at = Instant::now();
                entry.tx.send_if_modified(|cur| {
                    let next = PartitionOffsets {
                        log_start_offset: cur.log_start_offset.max(offsets.log_start_offset),
                        high_watermark: cur.high_watermark.max(offsets.high_watermark),
                    };
                    let changed = next != *cur;
                    *cur = next;
                    changed
                });
            }
            None => {
                let entry = Entry {
                    tx: watch::Sender::new(offsets),
                    confirmed_at: Instant::now(),
                };
                map.insert((topic_id, partition), entry);
            }
        }
    }

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
