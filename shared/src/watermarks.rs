//! High-watermark notifications.
//!
//! The sequencer publishes every partition's new offsets after a commit; fetch long-polls
//! subscribe and wake as soon as a watermark moves instead of sleeping. In standalone mode the
//! indexer and fetch tier share one [`Watermarks`]; a distributed fetch gateway feeds its own
//! from the indexer or by polling the store, through the same `publish`.

use std::collections::HashMap;
use std::sync::Mutex;

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
    partitions: Mutex<HashMap<(Uuid, i32), watch::Sender<PartitionOffsets>>>,
}

impl Watermarks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records new offsets; watermarks only move forward, so a stale publish is ignored.
    pub fn publish(&self, topic_id: Uuid, partition: i32, offsets: PartitionOffsets) {
        let mut map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&(topic_id, partition)) {
            Some(tx) => {
                tx.send_if_modified(|cur| {
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
                map.insert((topic_id, partition), watch::Sender::new(offsets));
            }
        }
    }

    /// The latest known offsets, if any were published.
    pub fn get(&self, topic_id: Uuid, partition: i32) -> Option<PartitionOffsets> {
        let map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(topic_id, partition)).map(|tx| *tx.borrow())
    }

    /// A receiver that wakes on every change of the partition's offsets.
    pub fn subscribe(
        &self,
        topic_id: Uuid,
        partition: i32,
    ) -> Option<watch::Receiver<PartitionOffsets>> {
        let map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(topic_id, partition)).map(|tx| tx.subscribe())
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
    }
}
