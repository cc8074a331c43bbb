//! The typed metadata model on top of [`MetaStore`]: topics, partitions, offset-index entries,
//! producer state, segment commit records, producer-id blocks and leases.
//!
//! This module owns the item key layout (partition key / sort key strings) and the encoding of
//! every item (JSON with a `format` version field, so a newer reader can recognise old items).
//! Writers that need atomic multi-item updates (the sequencer) build [`WriteOp`]s with the
//! helpers here and submit them in one `MetaStore::write`.
//!
//! Layout (`pk` / `sk`):
//! - `topic` / name → [`TopicRecord`]
//! - `part/{topic_id}` / `{partition:010}` → [`PartitionRecord`]
//! - `idx/{topic_id}/{partition}` / `{last_offset:020}` → [`IndexEntry`] (keyed by the *last*
//!   offset so "which entry holds offset X" is one range read: the first sk ≥ X)
//! - `prod/{topic_id}/{partition}` / `{producer_id:020}` → [`ProducerRecord`]
//! - `seg` / `{segment key}[~chunk]#{shard}` → [`SegmentCommitRecord`] (makes a retried commit
//!   return the same offsets; lists the partitions referencing the segment for garbage collection)
//! - `deleted-topic` / topic id → the [`TopicRecord`] of a deleted topic whose rows garbage
//!   collection has yet to remove
//! - `meta` / `producer-id-next` → next free producer id
//! - `meta` / `sasl-decoy-secret` → the key of the salts answered for unknown SASL users
//!   ([`crate::scram_credentials::load_or_init_decoy_secret`])
//! - `lease` / lease name → [`LeaseRecord`]
//! - `scram` / `{user}/{mechanism}` → a SCRAM credential
//!   ([`crate::scram_credentials::ScramCredentialRecord`])

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys::StoredSegmentKey;
use crate::lease_observations::LeaseObservations;
use crate::meta_store::{Condition, Direction, ItemKey, MetaStore, MetaStoreError, Query, WriteOp};
use crate::sequencer::BatchOutcome;

/// Attempts of a conditional topic-config update before it reports contention.
const CONFIG_UPDATE_ATTEMPTS: usize = 16;

/// Format version written into every item.
pub const ITEM_FORMAT: u32 = 1;

/// Errors of catalog operations.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("invalid partition count {0}")]
    InvalidPartitions(i32),
    #[error("concurrent update of {0:?} did not settle; retry")]
    Contention(ItemKey),
    #[error(transparent)]
    Store(#[from] MetaStoreError),
}

impl CatalogError {
    pub fn is_retryable(&self) -> bool {
        match self {
            CatalogError::Contention(_) => true,
            CatalogError::Store(e) => e.is_retryable(),
            CatalogError::TopicExists(_)
            | CatalogError::UnknownTopic(_)
            | CatalogError::InvalidTopicName { .. }
            | CatalogError::InvalidPartitions(_) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub format: u32,
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    pub created_at_ms: i64,
}

/// A partition's offsets. `next_offset` is also the high watermark: the sequencer writes the
/// index entries and this row in one atomic batch, so there is no gap between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub format: u32,
    pub next_offset: i64,
    pub log_start_offset: i64,
    pub bytes: u64,
    /// The largest batch max-timestamp ever appended (-1: none yet); each new index entry
    /// carries it as its `running_max_timestamp`.
    #[serde(default = "no_timestamp")]
    pub max_timestamp: i64,
}

fn no_timestamp() -> i64 {
    -1
}

/// Where one run of consecutive offsets of a partition lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub format: u32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub segment_key: String,
    pub byte_start: u64,
    pub byte_len: u64,
    pub batch_count: u32,
    pub record_count: u64,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    /// The largest max-timestamp of this entry and every entry before it in the partition
    /// (Kafka's time index keeps the same running maximum): it grows with the offset, so the
    /// first entry holding a timestamp ≥ T is found by binary search. `None` in entries
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_max_timestamp: Option<i64>,
}

/// Format of an [`IndexPage`] item as written on layout 2: compact arrays ([`StoredPage`]).
/// Format 2 (the same entries as whole JSON objects) is still read.
pub const INDEX_PAGE_FORMAT: u32 = 3;

/// Format of an [`IndexPage`] item as written on layout 3 ([`IndexPage::encode_short`]):
/// format 3 with short segment keys and offsets and timestamps relative to the entry before.
pub const INDEX_PAGE_FORMAT_SHORT: u32 = 4;

/// Several consecutive index entries of one partition in one item, keyed like an entry by the
/// last offset it holds. A page costs DynamoDB one write per started KB however many entries it
/// holds, where an entry of its own costs one per entry: the indexer folds the entries of many
/// commits into one page ([`crate::shard_log`]). Readers see entries, never pages
/// ([`decode_index_item`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredPage", into = "StoredPage")]
pub struct IndexPage {
    /// Contiguous, in offset order, at least one.
    pub entries: Vec<IndexEntry>,
}

/// An [`IndexPage`] as stored. Entries are what the fold writes most of, so they are arrays
/// rather than objects (about a third of the bytes, so of the write units): each segment key
/// once, and offsets and timestamps as differences, which are small numbers. The differences
/// wrap, so any values a client sent (timestamps are theirs) come back exactly.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredPage {
    /// Format 4. Field names differ from format 3's, so a release that reads only format 3
    /// refuses it as corrupt rather than misreading it.
    Short {
        #[serde(rename = "f")]
        format: u32,
        #[serde(rename = "s")]
        segments: Vec<StoredSegmentKey>,
        #[serde(rename = "e")]
        entries: Vec<PageEntry>,
    },
    Compact {
        format: u32,
        segments: Vec<String>,
        entries: Vec<PageEntry>,
    },
    /// Format 2: whole entries.
    Objects {
        format: u32,
        entries: Vec<IndexEntry>,
    },
}

/// `[segment position, base offset, last − base, byte start, byte length, batches, records,
/// first timestamp, max − first, running max − max (null: unknown)]`. In format 4 the base
/// offset is relative to the entry before's last offset + 1 and the first timestamp to the
/// entry before's (so both are usually small), and segment keys' times to the key before's.
type PageEntry = (u32, i64, i64, u64, u64, u32, u64, i64, i64, Option<i64>);

impl IndexPage {
    /// The page in format 4 (layout 3): what format 3 holds in about two thirds of the bytes.
    pub fn encode_short(&self) -> Bytes {
        let mut keys: Vec<&str> = Vec::new();
        let mut segments = Vec::new();
        let mut previous_ms = 0;
        let mut entries = Vec::with_capacity(self.entries.len());
        let (mut next_base, mut previous_first) = (0i64, 0i64);
        for e in &self.entries {
            let position = match keys.iter().position(|k| *k == e.segment_key) {
                Some(p) => p,
                None => {
                    let stored = StoredSegmentKey::of(&e.segment_key, previous_ms);
                    previous_ms = stored.ms(previous_ms).unwrap_or(previous_ms);
                    keys.push(&e.segment_key);
                    segments.push(stored);
                    keys.len() - 1
                }
            };
            entries.push(page_entry(
                position,
                e,
                e.base_offset.wrapping_sub(next_base),
                e.first_timestamp.wrapping_sub(previous_first),
            ));
            next_base = e.last_offset.wrapping_add(1);
            previous_first = e.first_timestamp;
        }
        encode(&StoredPage::Short {
            format: INDEX_PAGE_FORMAT_SHORT,
            segments,
            entries,
        })
    }
}

/// An entry as a page stores it, with its base offset and first timestamp as given.
fn page_entry(position: usize, e: &IndexEntry, base: i64, first: i64) -> PageEntry {
    (
        position as u32,
        base,
        e.last_offset.wrapping_sub(e.base_offset),
        e.byte_start,
        e.byte_len,
        e.batch_count,
        e.record_count,
        first,
        e.max_timestamp.wrapping_sub(e.first_timestamp),
        e.running_max_timestamp
            .map(|r| r.wrapping_sub(e.max_timestamp)),
    )
}

/// The segment keys of a format-4 page, their times relative to the key before's.
fn short_segment_keys(segments: &[StoredSegmentKey]) -> Result<Vec<String>, String> {
    let mut previous_ms = 0;
    segments
        .iter()
        .map(|s| {
            let key = s.key(previous_ms)?;
            previous_ms = s.ms(previous_ms).unwrap_or(previous_ms);
            Ok(key)
        })
        .collect()
}

impl From<IndexPage> for StoredPage {
    fn from(page: IndexPage) -> Self {
        let mut segments: Vec<String> = Vec::new();
        let mut entries = Vec::with_capacity(page.entries.len());
        for e in page.entries {
            let position = match segments.iter().position(|s| *s == e.segment_key) {
                Some(p) => p,
                None => {
                    segments.push(e.segment_key.clone());
                    segments.len() - 1
                }
            };
            entries.push(page_entry(position, &e, e.base_offset, e.first_timestamp));
        }
        StoredPage::Compact {
            format: INDEX_PAGE_FORMAT,
            segments,
            entries,
        }
    }
}

impl TryFrom<StoredPage> for IndexPage {
    type Error = String;

    fn try_from(stored: StoredPage) -> Result<Self, String> {
        let (segments, compact, relative) = match stored {
            StoredPage::Objects { entries, .. } => return Ok(IndexPage { entries }),
            StoredPage::Compact {
                segments, entries, ..
            } => (segments, entries, false),
            StoredPage::Short {
                segments, entries, ..
            } => (short_segment_keys(&segments)?, entries, true),
        };
        let (mut next_base, mut previous_first) = (0i64, 0i64);
        let entries = compact
            .into_iter()
            .map(
                |(position, base, span, start, len, batches, records, first, max, running)| {
                    let segment_key = segments.get(position as usize).ok_or_else(|| {
                        format!(
                            "index page entry names segment {position} of {}",
                            segments.len()
                        )
                    })?;
                    let (base, first) = match relative {
                        true => (
                            next_base.wrapping_add(base),
                            previous_first.wrapping_add(first),
                        ),
                        false => (base, first),
                    };
                    next_base = base.wrapping_add(span).wrapping_add(1);
                    previous_first = first;
                    Ok(IndexEntry {
                        format: ITEM_FORMAT,
                        base_offset: base,
                        last_offset: base.wrapping_add(span),
                        segment_key: segment_key.clone(),
                        byte_start: start,
                        byte_len: len,
                        batch_count: batches,
                        record_count: records,
                        first_timestamp: first,
                        max_timestamp: first.wrapping_add(max),
                        running_max_timestamp: running
                            .map(|r| first.wrapping_add(max).wrapping_add(r)),
                    })
                },
            )
            .collect::<Result<_, String>>()?;
        Ok(IndexPage { entries })
    }
}

/// An index item as stored: a page (format 2 or 3) or a single entry (format 1).
#[derive(Deserialize)]
#[serde(untagged)]
enum IndexItem {
    Page(IndexPage),
    Entry(IndexEntry),
}

/// The entries of one index item, whichever format it has. A page without entries is corrupt.
pub fn decode_index_item(key: &ItemKey, value: &[u8]) -> Result<Vec<IndexEntry>, MetaStoreError> {
    match decode::<IndexItem>(key, value)? {
        IndexItem::Entry(entry) => Ok(vec![entry]),
        IndexItem::Page(page) if !page.entries.is_empty() => Ok(page.entries),
        IndexItem::Page(_) => Err(MetaStoreError::Corrupt {
            key: key.clone(),
            reason: "index page without entries".into(),
        }),
    }
}

/// One remembered batch of an idempotent producer (Kafka keeps the last five).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerRecord {
    pub format: u32,
    pub epoch: i16,
    /// Oldest first, at most [`PRODUCER_BATCHES_KEPT`].
    pub batches: Vec<ProducerBatch>,
    /// When the producer's last batch was appended (ms since the epoch); the state expires
    /// `producer.id.expiration.ms` later. 0 in rows written before it existed: never expires.
    #[serde(default)]
    pub last_write_ms: i64,
}

/// How many recent batches per producer and partition are kept for de-duplication.
pub const PRODUCER_BATCHES_KEPT: usize = 5;

impl ProducerRecord {
    /// A producer's state after it appended `batch` under `epoch` at `now_ms`: a new epoch
    /// starts afresh, and only the last [`PRODUCER_BATCHES_KEPT`] batches are remembered.
    /// The commit path and the shard log's replay both go through here, so they agree.
    pub fn after_batch(
        current: Option<&ProducerRecord>,
        epoch: i16,
        batch: ProducerBatch,
        now_ms: i64,
    ) -> ProducerRecord {
        let mut record = match current {
            Some(r) if r.epoch == epoch => r.clone(),
            _ => ProducerRecord {
                format: ITEM_FORMAT,
                epoch,
                batches: Vec::new(),
                last_write_ms: 0,
            },
        };
        record.last_write_ms = now_ms;
        record.batches.push(batch);
        if record.batches.len() > PRODUCER_BATCHES_KEPT {
            record.batches.remove(0);
        }
        record
    }
}

impl PartitionRecord {
    /// Moves the row past an appended run of offsets ending at `last_offset`.
    pub fn append(&mut self, last_offset: i64, byte_len: u64, max_timestamp: i64) {
        self.next_offset = last_offset + 1;
        self.bytes += byte_len;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
    }
}

/// The sequencing result of one segment, stored with the commit so a retry gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentCommitRecord {
    pub format: u32,
    pub size: u64,
    pub committed_at_ms: i64,
    pub outcomes: Vec<BatchOutcome>,
    /// The partitions this commit appended to, each with the last offset it wrote there:
    /// the segment is referenced by a partition until that partition's log start passes this
    /// offset (garbage collection reads it). `None` in records written before it existed;
    /// such segments are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<SegmentPart>>,
}

/// A partition's share of a committed segment (see [`SegmentCommitRecord::parts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentPart {
    pub topic_id: Uuid,
    pub partition: i32,
    pub last_offset: i64,
}

/// A consumer group's committed position in one partition (Kafka's OffsetCommit value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub format: u32,
    /// The topic's name when committed (reported back; the key holds the topic id).
    pub topic: String,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub committed_at_ms: i64,
}

/// A group's directory entry (see [`group_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub format: u32,
    pub registered_at_ms: i64,
}

/// Longest group id accepted (the store's partition key must hold it).
pub const MAX_GROUP_ID_BYTES: usize = 1024;

/// A lease (or a member's heartbeat): who holds it, for how long, under which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// [`LEASE_FORMAT`] in records this release writes: the newest metadata layout the writer
    /// reads (1 in those of releases before the shard log).
    pub format: u32,
    pub owner: String,
    pub owner_addr: String,
    pub epoch: u64,
    /// The holder's wall clock at its last renewal plus the lease time, in ms since the epoch:
    /// for display and for finding a live owner to talk to. No takeover compares it with a
    /// clock (see [`crate::lease_observations`]); 0 once released.
    pub expires_at_ms: i64,
    /// The lease time the holder renews for. 0 in records written before it was stored: the
    /// taker's own lease time counts then.
    #[serde(default)]
    pub ttl_ms: u64,
    /// Given up by its owner (clean shutdown, balancing): another replica may take it at once.
    #[serde(default)]
    pub released: bool,
    /// The holder's named listeners (name → advertised `host:port`), for clients of a
    /// listener other than the primary one (`owner_addr`); empty with one unnamed listener.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub listeners: BTreeMap<String, String>,
}

/// Format of the lease and member records this release writes: the newest metadata layout it
/// reads (3, [`crate::shards::LAYOUT_SHORT_ITEMS`]). Moving a cluster to a layout is refused
/// while a live record is older ([`crate::shards::switch_to_shard_log`]).
pub const LEASE_FORMAT: u32 = crate::shards::LAYOUT_NEWEST;

impl LeaseRecord {
    /// Whether the process that wrote this record reads metadata `layout`.
    pub fn reads_layout(&self, layout: u32) -> bool {
        self.format >= layout
    }

    /// The lease time the holder renews for (zero if the record predates it).
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

/// A lease as a condition on writes: they succeed only while the lease item still has this
/// version (no one renewed or took it since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseFence {
    pub name: String,
    pub version: u64,
}

pub fn topic_key(name: &str) -> ItemKey {
    ItemKey::new("topic", name)
}
pub fn partition_key(topic_id: Uuid, partition: i32) -> ItemKey {
    ItemKey::new(partitions_pk(topic_id), format!("{partition:010}"))
}
pub fn index_pk(topic_id: Uuid, partition: i32) -> String {
    format!("idx/{topic_id}/{partition}")
}
pub fn offset_sk(offset: i64) -> String {
    format!("{:020}", offset.max(0))
}
pub fn index_key(topic_id: Uuid, partition: i32, last_offset: i64) -> ItemKey {
    ItemKey::new(index_pk(topic_id, partition), offset_sk(last_offset))
}
pub fn producer_pk(topic_id: Uuid, partition: i32) -> String {
    format!("prod/{topic_id}/{partition}")
}
pub fn producer_key(topic_id: Uuid, partition: i32, producer_id: i64) -> ItemKey {
    ItemKey::new(
        producer_pk(topic_id, partition),
        format!("{:020}", producer_id.max(0)),
    )
}
pub fn partitions_pk(topic_id: Uuid) -> String {
    format!("part/{topic_id}")
}
/// The partition key of the markers of deleted topics whose rows garbage collection has not
/// removed yet.
pub const DELETED_TOPIC_PK: &str = "deleted-topic";
/// A deleted topic's marker (its last [`TopicRecord`]).
pub fn deleted_topic_key(topic_id: Uuid) -> ItemKey {
    ItemKey::new(DELETED_TOPIC_PK, topic_id.to_string())
}
/// The partition key of every segment commit record (sorted by segment key).
pub const SEGMENT_COMMIT_PK: &str = "seg";
/// One commit record per (segment, shard): a segment spanning shards is committed by each
/// shard's owner separately. A commit split to fit the store's write limit has a record per
/// chunk, named `{segment_key}~{chunk}`.
pub fn segment_commit_key(segment_key: &str, shard: u32) -> ItemKey {
    ItemKey::new(SEGMENT_COMMIT_PK, format!("{segment_key}#{shard:05}"))
}
/// The partition key of the commit records the shard log's fold writes for `shard`
/// ([`crate::shard_log`]): one key per shard, so no key takes every commit of the cluster.
pub fn shard_segment_commits_pk(shard: u32) -> String {
    format!("seg/{shard:05}")
}
/// The commit record of a segment (or `{key}~{chunk}`) folded from `shard`'s log; its sort
/// key has the same form as [`segment_commit_key`]'s.
pub fn shard_segment_commit_key(record_name: &str, shard: u32) -> ItemKey {
    ItemKey::new(
        shard_segment_commits_pk(shard),
        format!("{record_name}#{shard:05}"),
    )
}
/// The segment object a commit record's sort key belongs to (without shard and chunk).
pub fn segment_of_commit_sk(sk: &str) -> &str {
    let record = sk.rsplit_once('#').map_or(sk, |(name, _)| name);
    record
        .rsplit_once('~')
        .map_or(record, |(segment, _)| segment)
}
/// Committed offsets of `group`: one partition key per group, sorted by topic id and partition.
pub fn group_offsets_pk(group: &str) -> String {
    format!("goff/{group}")
}
pub fn group_offset_key(group: &str, topic_id: Uuid, partition: i32) -> ItemKey {
    ItemKey::new(
        group_offsets_pk(group),
        format!("{topic_id}/{partition:010}"),
    )
}
/// The directory entry of a group that has (or had) committed offsets: one partition key for
/// every group, so groups can be listed without scanning the table.
pub fn group_key(group: &str) -> ItemKey {
    ItemKey::new("group", group)
}
pub fn lease_key(name: &str) -> ItemKey {
    ItemKey::new("lease", name)
}
/// The partition key of every SCRAM credential (few items: users times mechanisms).
pub const SCRAM_CREDENTIAL_PK: &str = "scram";
/// A user's SCRAM credential for one mechanism (`SCRAM-SHA-256`, `SCRAM-SHA-512`). The
/// mechanism name has no `/`, so the user is everything before the last `/`.
pub fn scram_credential_key(user: &str, mechanism: &str) -> ItemKey {
    ItemKey::new(SCRAM_CREDENTIAL_PK, format!("{user}/{mechanism}"))
}
fn producer_id_key() -> ItemKey {
    ItemKey::new("meta", "producer-id-next")
}

/// Encodes an item value.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    // Serializing these plain structs to JSON cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// Decodes an item value.
pub fn decode<T: DeserializeOwned>(key: &ItemKey, value: &[u8]) -> Result<T, MetaStoreError> {
    serde_json::from_slice(value).map_err(|e| MetaStoreError::Corrupt {
        key: key.clone(),
        reason: e.to_string(),
    })
}

/// Checks a topic name against Kafka's rules.
pub fn validate_topic_name(name: &str) -> Result<(), CatalogError> {
    let bad = |reason| {
        Err(CatalogError::InvalidTopicName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > 249 {
        return bad("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The wall clock a [`Catalog`] stamps lease and member expiries with (for display and for
/// finding a live owner or counting live members; no takeover compares it with anything, see
/// [`crate::lease_observations`]).
#[derive(Debug, Clone, Copy, Default)]
pub enum WallClock {
    /// The system's clock.
    #[default]
    System,
    /// The system's clock when made, advanced by tokio's clock since: tests on paused time see
    /// expiries pass as they advance it, as they would on a real clock.
    FollowsTokio {
        origin_ms: i64,
        origin: tokio::time::Instant,
    },
}

impl WallClock {
    /// A wall clock that moves with tokio's (possibly paused) clock from now on.
    pub fn follows_tokio() -> Self {
        WallClock::FollowsTokio {
            origin_ms: now_ms(),
            origin: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            WallClock::System => now_ms(),
            WallClock::FollowsTokio { origin_ms, origin } => {
                origin_ms + origin.elapsed().as_millis() as i64
            }
        }
    }
}

/// How long a cached topic list is trusted before a lookup reloads it.
const TOPIC_CACHE_TTL: Duration = Duration::from_secs(2);

/// How long a topic missing from a fresh reload is reported missing without another reload.
const TOPIC_MISS_TTL: Duration = Duration::from_millis(500);

/// Reads every topic from the store into `cache`, unless the cache was invalidated while
/// reading (a topic created or deleted meanwhile may be missing from what was read).
async fn load_topics(
    store: &Arc<dyn MetaStore>,
    cache: &RwLock<TopicCache>,
) -> Result<Vec<TopicRecord>, CatalogError> {
    let generation = cache.read().unwrap_or_else(|e| e.into_inner()).generation;
    // The list shows every create acknowledged before the read began: its age counts from there.
    let started = Instant::now();
    let items = store.query(Query::all("topic")).await?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(decode::<TopicRecord>(&item.key, &item.value)?);
    }
    let mut cache = cache.write().unwrap_or_else(|e| e.into_inner());
    if cache.generation == generation {
        cache.by_id = out.iter().map(|t| (t.topic_id, t.clone())).collect();
        cache.by_name = out.iter().map(|t| (t.name.clone(), t.clone())).collect();
        cache.loaded_at = Some(started);
    }
    Ok(out)
}

#[derive(Default)]
struct TopicCache {
    /// Bumped by every invalidation.
    generation: u64,
    loaded_at: Option<Instant>,
    by_name: HashMap<String, TopicRecord>,
    by_id: HashMap<Uuid, TopicRecord>,
}

/// Typed access to the metadata store.
pub struct Catalog {
    store: Arc<dyn MetaStore>,
    topics: Arc<RwLock<TopicCache>>,
    /// The reload of the topic list in flight, shared by every lookup that misses meanwhile.
    /// A shared future rather than a lock: whichever waiter is polled drives it, so a lookup
    /// whose task is not being polled (a request future queued on a busy connection) can never
    /// hold up the others.
    topic_reload: std::sync::Mutex<Option<TopicReload>>,
    /// The lease versions this process has read and since when: what decides a takeover.
    lease_observations: LeaseObservations,
    wall_clock: WallClock,
    /// Added to this process's wall clock where leases are written: always zero, except in
    /// tests that give one replica a clock running ahead of another's.
    wall_clock_skew_ms: i64,
    /// The shard logs' entries above their folds, as this process has read them.
    log_tails: crate::shard_log::LogTails,
}

type TopicReload = Shared<BoxFuture<'static, Result<(), String>>>;

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("store", &self.store)
            .finish()
    }
}

impl Catalog {
    pub fn new(store: Arc<dyn MetaStore>) -> Self {
        Catalog {
            store,
            topics: Arc::new(RwLock::new(TopicCache::default())),
            topic_reload: std::sync::Mutex::new(None),
            lease_observations: LeaseObservations::default(),
            wall_clock: WallClock::System,
            wall_clock_skew_ms: 0,
            log_tails: Default::default(),
        }
    }

    /// The same catalog reading `clock` where leases and member heartbeats are stamped and
    /// judged live (tests on paused time use [`WallClock::follows_tokio`]).
    pub fn with_wall_clock(mut self, clock: WallClock) -> Self {
        self.wall_clock = clock;
        self
    }

    /// This process's wall clock, in milliseconds since the epoch, as leases record it.
    pub fn wall_now_ms(&self) -> i64 {
        self.wall_clock.now_ms() + self.wall_clock_skew_ms
    }

    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// Creates a topic: its partition rows, then the topic item that makes it exist.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicRecord, CatalogError> {
        validate_topic_name(name)?;
        if !(1..=100_000).contains(&partitions) {
            return Err(CatalogError::InvalidPartitions(partitions));
        }
        let record = TopicRecord {
            format: ITEM_FORMAT,
            name: name.to_string(),
            topic_id: Uuid::new_v4(),
            partitions,
            configs,
            created_at_ms: now_ms(),
        };
        if self.store.get(&topic_key(name)).await?.is_some() {
            return Err(CatalogError::TopicExists(name.to_string()));
        }
        let row = PartitionRecord {
            format: ITEM_FORMAT,
            next_offset: 0,
            log_start_offset: 0,
            bytes: 0,
            max_timestamp: -1,
        };
        let mut ops: Vec<WriteOp> = (0..partitions)
            .map(|p| WriteOp::Put {
                key: partition_key(record.topic_id, p),
                value: encode(&row),
                condition: Condition::Absent,
            })
            .collect();
        ops.push(WriteOp::Put {
            key: topic_key(name),
            value: encode(&record),
            condition: Condition::Absent,
        });
        // The topic item is written last, in the same batch as the last partition rows: until it
        // exists the topic does not, and partition rows of a creation that failed half-way are
        // keyed by a topic id nobody will ever use (left for garbage collection). A store with
        // limited write batches (DynamoDB: 100) gets the rows in several writes.
        self.write_all_but_last_batch(&mut ops).await?;
        let topic_index = ops.len() - 1;
        match self.store.write(ops).await {
            Ok(()) => {
                self.invalidate_topics();
                Ok(record)
            }
            Err(MetaStoreError::ConditionFailed { index, .. }) if index == topic_index => {
                Err(CatalogError::TopicExists(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Raises a topic's partition count to `partitions` (Kafka's CreatePartitions): the new
    /// partitions' rows, then the topic item with the new count, conditioned on the version it
    /// was read at (a concurrent change makes this a retriable `Contention`). Rows written by
    /// an attempt that failed half-way are simply found again by the next one.
    pub async fn add_partitions(
        &self,
        name: &str,
        partitions: i32,
    ) -> Result<TopicRecord, CatalogError> {
        let key = topic_key(name);
        let Some(item) = self.store.get(&key).await? else {
            return Err(CatalogError::UnknownTopic(name.to_string()));
        };
        let mut record: TopicRecord = decode(&key, &item.value)?;
        if partitions <= record.partitions || partitions > 100_000 {
            return Err(CatalogError::InvalidPartitions(partitions));
        }
        let row = PartitionRecord {
            format: ITEM_FORMAT,
            next_offset: 0,
            log_start_offset: 0,
            bytes: 0,
            max_timestamp: -1,
        };
        let rows: Vec<WriteOp> = (record.partitions..partitions)
            .map(|p| WriteOp::Put {
                key: partition_key(record.topic_id, p),
                value: encode(&row),
                condition: Condition::Absent,
            })
            .collect();
        for chunk in rows.chunks(self.store.max_batch_ops().max(1)) {
            match self.store.write(chunk.to_vec()).await {
                Ok(()) => {}
                // Some rows exist already (an earlier attempt failed before its topic update,
                // or a concurrent one): never overwrite a row, write the missing ones one by one.
                Err(MetaStoreError::ConditionFailed { .. }) => {
                    for op in chunk {
                        match self.store.write(vec![op.clone()]).await {
                            Ok(()) | Err(MetaStoreError::ConditionFailed { .. }) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        record.partitions = partitions;
        let update = WriteOp::Put {
            key: key.clone(),
            value: encode(&record),
            condition: Condition::Version(item.version),
        };
        match self.store.write(vec![update]).await {
            Ok(()) => {
                self.invalidate_topics();
                Ok(record)
            }
            Err(MetaStoreError::ConditionFailed { .. }) => Err(CatalogError::Contention(key)),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces a topic's configs with `change(current)`, as one write conditioned on the
    /// topic item's version: a concurrent change (another alter, a CreatePartitions, a delete
    /// and re-create) makes the write fail, and the change is re-applied to the new state, so
    /// no update is lost. `change` may refuse (its error is returned as is).
    pub async fn update_topic_configs<E: From<CatalogError>>(
        &self,
        name: &str,
        change: impl Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, E>,
    ) -> Result<TopicRecord, E> {
        let key = topic_key(name);
        for _ in 0..CONFIG_UPDATE_ATTEMPTS {
            let Some(item) = self.store.get(&key).await.map_err(CatalogError::from)? else {
                return Err(CatalogError::UnknownTopic(name.to_string()).into());
            };
            let mut record: TopicRecord = decode(&key, &item.value).map_err(CatalogError::from)?;
            record.configs = change(&record.configs)?;
            let update = WriteOp::Put {
                key: key.clone(),
                value: encode(&record),
                condition: Condition::Version(item.version),
            };
            match self.store.write(vec![update]).await {
                Ok(()) => {
                    self.invalidate_topics();
                    return Ok(record);
                }
                Err(MetaStoreError::ConditionFailed { .. }) => continue,
                Err(e) => return Err(CatalogError::from(e).into()),
            }
        }
        Err(CatalogError::Contention(key).into())
    }

    /// Deletes a topic. Its data becomes unreachable at once (readers resolve names to ids);
    /// partition rows, index entries and segments are left for garbage collection, which
    /// finds the topic by the marker written in the same write ([`deleted_topic_key`]).
    pub async fn delete_topic(&self, name: &str) -> Result<TopicRecord, CatalogError> {
        let key = topic_key(name);
        let Some(item) = self.store.get(&key).await? else {
            return Err(CatalogError::UnknownTopic(name.to_string()));
        };
        let record: TopicRecord = decode(&key, &item.value)?;
        match self
            .store
            .write(vec![
                WriteOp::Delete {
                    key,
                    condition: Condition::Version(item.version),
                },
                WriteOp::Put {
                    key: deleted_topic_key(record.topic_id),
                    value: encode(&record),
                    condition: Condition::None,
                },
            ])
            .await
        {
            Ok(()) => {
                self.invalidate_topics();
                Ok(record)
            }
            Err(MetaStoreError::ConditionFailed { .. }) => {
                Err(CatalogError::UnknownTopic(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// All topics, read from the store.
    pub async fn list_topics(&self) -> Result<Vec<TopicRecord>, CatalogError> {
        load_topics(&self.store, &self.topics).await
    }

    /// Forgets cached topics (after a create or delete).
    pub fn invalidate_topics(&self) {
        let mut cache = self.topics.write().unwrap_or_else(|e| e.into_inner());
        cache.loaded_at = None;
        cache.generation += 1;
    }

    fn cached<R>(&self, f: impl FnOnce(&TopicCache) -> Option<R>) -> Option<R> {
        let cache = self.topics.read().unwrap_or_else(|e| e.into_inner());
        match cache.loaded_at {
            Some(at) if at.elapsed() < TOPIC_CACHE_TTL => f(&cache),
            _ => None,
        }
    }

    /// A topic by name, read from the store (not the cache): for answers that must show every
    /// change already acknowledged, by any process (DescribeConfigs after an alter elsewhere).
    pub async fn topic_uncached(&self, name: &str) -> Result<Option<TopicRecord>, CatalogError> {
        let key = topic_key(name);
        match self.store.get(&key).await? {
            Some(item) => Ok(Some(decode(&key, &item.value)?)),
            None => Ok(None),
        }
    }

    /// A topic by name, from the cache when fresh (see [`Catalog::lookup_topic`]).
    pub async fn topic(&self, name: &str) -> Result<Option<TopicRecord>, CatalogError> {
        self.lookup_topic(|c| c.by_name.get(name).cloned()).await
    }

    /// A topic by name, never missing when its create was acknowledged (by any process)
    /// before this call: for answers a client acts on for minutes (librdkafka, told a
    /// subscribed topic is missing, waits for its next periodic Metadata refresh before it
    /// joins its group). A miss answered from a reload older than the call, which a create
    /// elsewhere may postdate, is checked with one read of the topic's item.
    pub async fn topic_strict(&self, name: &str) -> Result<Option<TopicRecord>, CatalogError> {
        let asked = Instant::now();
        if let Some(t) = self.topic(name).await? {
            return Ok(Some(t));
        }
        if self.loaded_after(Some(asked)) {
            return Ok(None);
        }
        let stored = self.topic_uncached(name).await?;
        if stored.is_some() {
            // The cached list misses it: the next lookup reloads.
            self.invalidate_topics();
        }
        Ok(stored)
    }

    /// A topic by id, from the cache when fresh (see [`Catalog::lookup_topic`]).
    pub async fn topic_by_id(&self, topic_id: Uuid) -> Result<Option<TopicRecord>, CatalogError> {
        self.lookup_topic(|c| c.by_id.get(&topic_id).cloned()).await
    }

    /// A cached topic, or, on a miss, the answer of a reload of the topic list. A miss right
    /// after a reload is answered from it (unknown topics are asked for in bursts: every
    /// partition of a request, every retry of a client), and concurrent misses share one
    /// reload, so unknown names cost the store at most one list per [`TOPIC_MISS_TTL`].
    async fn lookup_topic(
        &self,
        find: impl Fn(&TopicCache) -> Option<TopicRecord>,
    ) -> Result<Option<TopicRecord>, CatalogError> {
        if let Some(t) = self.cached(&find) {
            return Ok(Some(t));
        }
        let asked = Instant::now();
        if self.loaded_after(asked.checked_sub(TOPIC_MISS_TTL)) {
            return Ok(self.cached(&find));
        }
        // Twice at most: a reload that raced an invalidation (a topic created or deleted
        // meanwhile) leaves nothing cached, and is followed by one that did not.
        for _ in 0..2 {
            self.shared_reload().await.map_err(|e| {
                CatalogError::Store(MetaStoreError::Unavailable(format!(
                    "reloading topics: {e}"
                )))
            })?;
            if self.loaded_after(asked.checked_sub(TOPIC_MISS_TTL)) {
                break;
            }
        }
        Ok(self.cached(&find))
    }

    /// The reload in flight, or a new one.
    fn shared_reload(&self) -> TopicReload {
        let mut slot = self.topic_reload.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reload) = slot.as_ref().filter(|r| r.peek().is_none()) {
            return reload.clone();
        }
        let (store, cache) = (self.store.clone(), self.topics.clone());
        let reload = async move {
            load_topics(&store, &cache)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
        .boxed()
        .shared();
        *slot = Some(reload.clone());
        reload
    }

    /// Whether the cached list was loaded at or after `since` (and not invalidated).
    fn loaded_after(&self, since: Option<Instant>) -> bool {
        let cache = self.topics.read().unwrap_or_else(|e| e.into_inner());
        match (cache.loaded_at, since) {
            (Some(at), Some(since)) => at >= since,
            _ => false,
        }
    }

    /// A partition row and its item version.
    pub async fn partition(
        &self,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Option<(PartitionRecord, u64)>, CatalogError> {
        let key = partition_key(topic_id, partition);
        match self.store.get(&key).await? {
            Some(item) => Ok(Some((decode(&key, &item.value)?, item.version))),
            None => Ok(None),
        }
    }

    /// Index entries whose last offset is ≥ `offset`, in offset order, at most `limit`, from
    /// single-entry items and pages alike (a page's entries below `offset`, and entries two
    /// overlapping pages both hold, are left out).
    pub async fn index_entries_from(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
        limit: Option<usize>,
    ) -> Result<Vec<IndexEntry>, CatalogError> {
        // Every item found holds at least one entry reaching `offset` (its key is its last
        // offset), so `limit` items hold at least `limit` such entries.
        let items = self
            .store
            .query(Query {
                pk: index_pk(topic_id, partition),
                start: Bound::Included(offset_sk(offset)),
                end: Bound::Unbounded,
                direction: Direction::Forward,
                limit,
            })
            .await?;
        let mut entries: Vec<IndexEntry> = Vec::with_capacity(items.len());
        for item in &items {
            for entry in decode_index_item(&item.key, &item.value)? {
                // Pages of two folds may overlap (a fold redone after a crash): an entry is
                // the same wherever it is stored, so one already taken is skipped.
                let covered = entries
                    .last()
                    .map_or(offset.saturating_sub(1), |e| e.last_offset);
                if entry.last_offset > covered {
                    entries.push(entry);
                }
            }
        }
        if limit.is_none_or(|limit| entries.len() < limit) {
            // The pages end before what was asked: the rest may be in the shard's log.
            let from = entries.last().map_or(offset, |e| e.last_offset + 1);
            let tail = self
                .log_tails
                .partition_tail(self.store.as_ref(), topic_id, partition, from)
                .await?;
            entries.extend(tail.entries);
        }
        if let Some(limit) = limit {
            entries.truncate(limit);
        }
        Ok(entries)
    }

    /// A partition's row as readers see it: on the shard log, the high watermark (and the
    /// running maximum timestamp) include the entries not folded into the row yet. Only the
    /// shard's owner needs the row as stored ([`Catalog::partition`], with its version).
    pub async fn partition_view(
        &self,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Option<PartitionRecord>, CatalogError> {
        let Some((mut row, _)) = self.partition(topic_id, partition).await? else {
            return Ok(None);
        };
        let tail = self
            .log_tails
            .partition_tail(self.store.as_ref(), topic_id, partition, row.next_offset)
            .await?;
        for entry in &tail.entries {
            if entry.last_offset >= row.next_offset {
                row.append(
                    entry.last_offset,
                    entry.byte_len,
                    entry.running_max_timestamp.unwrap_or(entry.max_timestamp),
                );
            }
        }
        Ok(Some(row))
    }

    /// The producer state of one producer on one partition.
    pub async fn producer(
        &self,
        topic_id: Uuid,
        partition: i32,
        producer_id: i64,
    ) -> Result<Option<(ProducerRecord, u64)>, CatalogError> {
        let key = producer_key(topic_id, partition, producer_id);
        match self.store.get(&key).await? {
            Some(item) => Ok(Some((decode(&key, &item.value)?, item.version))),
            None => Ok(None),
        }
    }

    /// Every producer state of one partition: (producer id, state, item version).
    pub async fn producers_of(
        &self,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Vec<(i64, ProducerRecord, u64)>, CatalogError> {
        let items = self
            .store
            .query(Query::all(producer_pk(topic_id, partition)))
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let id = item
                .key
                .sk
                .parse::<i64>()
                .map_err(|e| MetaStoreError::Corrupt {
                    key: item.key.clone(),
                    reason: format!("producer id: {e}"),
                })?;
            out.push((id, decode(&item.key, &item.value)?, item.version));
        }
        Ok(out)
    }

    /// The stored result of a segment commit, if the segment was committed.
    pub async fn segment_commit(
        &self,
        segment_key: &str,
        shard: u32,
    ) -> Result<Option<SegmentCommitRecord>, CatalogError> {
        let key = segment_commit_key(segment_key, shard);
        match self.store.get(&key).await? {
            Some(item) => Ok(Some(decode(&key, &item.value)?)),
            None => Ok(None),
        }
    }

    /// Segment commit records whose sort key is at or after `start_sk`, in key order, at most
    /// `limit`: a garbage-collection pass reads them a page at a time.
    pub async fn segment_commits_from(
        &self,
        start_sk: Bound<String>,
        limit: usize,
    ) -> Result<Vec<(String, SegmentCommitRecord)>, CatalogError> {
        self.segment_commits_in(SEGMENT_COMMIT_PK, start_sk, limit)
            .await
    }

    /// Like [`Catalog::segment_commits_from`], under the partition key `pk` (the shared `seg`
    /// or one shard's [`shard_segment_commits_pk`]).
    pub async fn segment_commits_in(
        &self,
        pk: &str,
        start_sk: Bound<String>,
        limit: usize,
    ) -> Result<Vec<(String, SegmentCommitRecord)>, CatalogError> {
        let items = self
            .store
            .query(Query {
                pk: pk.into(),
                start: start_sk,
                end: Bound::Unbounded,
                direction: Direction::Forward,
                limit: Some(limit),
            })
            .await?;
        items
            .into_iter()
            .map(|i| Ok((i.key.sk.clone(), decode(&i.key, &i.value)?)))
            .collect()
    }

    /// Deletes `keys` unconditionally, in writes of at most the store's batch limit. Not
    /// atomic as a whole: on error some may be gone; repeating is harmless.
    pub async fn delete_items(&self, keys: Vec<ItemKey>) -> Result<(), CatalogError> {
        let mut ops: Vec<WriteOp> = keys
            .into_iter()
            .map(|key| WriteOp::Delete {
                key,
                condition: Condition::None,
            })
            .collect();
        self.write_all_but_last_batch(&mut ops).await?;
        if !ops.is_empty() {
            self.store.write(ops).await?;
        }
        Ok(())
    }

    /// Writes `ops` from the front in batches of the store's limit until at most one batch is
    /// left in `ops` (for the caller to write, and to tell that write's failure apart).
    async fn write_all_but_last_batch(&self, ops: &mut Vec<WriteOp>) -> Result<(), MetaStoreError> {
        let per_write = self.store.max_batch_ops().max(1);
        while ops.len() > per_write {
            let rest = ops.split_off(per_write);
            self.store.write(std::mem::replace(ops, rest)).await?;
        }
        Ok(())
    }

    /// Topics deleted whose rows garbage collection has not removed yet.
    pub async fn deleted_topics(&self) -> Result<Vec<Uuid>, CatalogError> {
        let items = self.store.query(Query::all(DELETED_TOPIC_PK)).await?;
        items
            .into_iter()
            .map(|i| {
                i.key.sk.parse::<Uuid>().map_err(|e| {
                    CatalogError::from(MetaStoreError::Corrupt {
                        key: i.key.clone(),
                        reason: e.to_string(),
                    })
                })
            })
            .collect()
    }

    /// Every item of the partition key `pk` (keys only are used by callers that delete them).
    pub async fn item_keys(&self, pk: &str) -> Result<Vec<ItemKey>, CatalogError> {
        let items = self.store.query(Query::all(pk)).await?;
        Ok(items.into_iter().map(|i| i.key).collect())
    }

    /// Reserves `count` consecutive producer ids and returns the first.
    pub async fn allocate_producer_ids(&self, count: i64) -> Result<i64, CatalogError> {
        let key = producer_id_key();
        for _ in 0..64 {
            let current = self.store.get(&key).await?;
            let (next, condition) = match &current {
                Some(item) => (
                    decode::<i64>(&key, &item.value)?,
                    Condition::Version(item.version),
                ),
                None => (0, Condition::Absent),
            };
            let op = WriteOp::Put {
                key: key.clone(),
                value: encode(&(next + count)),
                condition,
            };
            match self.store.write(vec![op]).await {
                Ok(()) => return Ok(next),
                Err(MetaStoreError::ConditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CatalogError::Contention(key))
    }

    /// The lease `name` with its item version, if it was ever taken. Like every read of a
    /// lease, a sighting for [`Catalog::acquire_lease`].
    pub async fn lease(&self, name: &str) -> Result<Option<(LeaseRecord, u64)>, CatalogError> {
        let key = lease_key(name);
        match self.store.get(&key).await? {
            Some(item) => {
                self.lease_observations.observe(name, item.version);
                Ok(Some((decode(&key, &item.value)?, item.version)))
            }
            None => Ok(None),
        }
    }

    /// Every lease whose name starts with `prefix`, with its item version. Each is a sighting
    /// for [`Catalog::acquire_lease`], so a replica that reads them every round can take a
    /// dead owner's lease a lease time after its last renewal, not after it first needs it.
    pub async fn leases(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, LeaseRecord, u64)>, CatalogError> {
        let items = self
            .store
            .query(Query {
                pk: "lease".into(),
                start: Bound::Included(prefix.to_string()),
                end: Bound::Unbounded,
                direction: Direction::Forward,
                limit: None,
            })
            .await?;
        let mut out = Vec::new();
        for item in items {
            if !item.key.sk.starts_with(prefix) {
                break;
            }
            let lease: LeaseRecord = decode(&item.key, &item.value)?;
            self.lease_observations.observe(&item.key.sk, item.version);
            out.push((item.key.sk.clone(), lease, item.version));
        }
        Ok(out)
    }

    /// Gives a lease up (marks it released) if `owner` still holds it at `version`, so another
    /// replica can take it at once instead of waiting a lease time.
    pub async fn release_lease(
        &self,
        name: &str,
        owner: &str,
        version: u64,
    ) -> Result<bool, CatalogError> {
        let key = lease_key(name);
        let Some(item) = self.store.get(&key).await? else {
            return Ok(false);
        };
        let mut lease: LeaseRecord = decode(&key, &item.value)?;
        if lease.owner != owner || item.version != version {
            return Ok(false);
        }
        lease.released = true;
        // Readers that look for a live owner by its expiry (routing, display, older versions)
        // see it gone too.
        lease.expires_at_ms = 0;
        let op = WriteOp::Put {
            key,
            value: encode(&lease),
            condition: Condition::Version(version),
        };
        match self.store.write(vec![op]).await {
            Ok(()) => {
                self.lease_observations.forget(name);
                Ok(true)
            }
            Err(MetaStoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Records that a process of `kind` (e.g. "indexer") is alive until now + `ttl`.
    pub async fn heartbeat_member(
        &self,
        kind: &str,
        id: &str,
        addr: &str,
        ttl: Duration,
    ) -> Result<(), CatalogError> {
        let record = LeaseRecord {
            format: LEASE_FORMAT,
            owner: id.to_string(),
            owner_addr: addr.to_string(),
            epoch: 0,
            expires_at_ms: self.wall_now_ms() + ttl.as_millis() as i64,
            ttl_ms: ttl.as_millis() as u64,
            released: false,
            listeners: BTreeMap::new(),
        };
        let op = WriteOp::Put {
            key: ItemKey::new(format!("member/{kind}"), id),
            value: encode(&record),
            condition: Condition::None,
        };
        Ok(self.store.write(vec![op]).await?)
    }

    /// The processes of `kind` whose heartbeat has not expired.
    pub async fn live_members(&self, kind: &str) -> Result<Vec<LeaseRecord>, CatalogError> {
        let now = self.wall_now_ms();
        let items = self
            .store
            .query(Query::all(format!("member/{kind}")))
            .await?;
        let mut out = Vec::new();
        for item in items {
            let m: LeaseRecord = decode(&item.key, &item.value)?;
            if m.expires_at_ms > now {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Stores a group's committed offsets (last write wins; several store writes if the
    /// store's batch limit requires, so a failure may leave a prefix written, which a retry
    /// of the commit overwrites). With a `fence`, every write also checks that the group
    /// coordinator's lease still has the version it had (a deposed coordinator's commit fails
    /// with `ConditionFailed`).
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(Uuid, i32, CommittedOffset)>,
        fence: Option<&LeaseFence>,
    ) -> Result<(), CatalogError> {
        let ops = offsets
            .into_iter()
            .map(|(topic_id, partition, value)| WriteOp::Put {
                key: group_offset_key(group, topic_id, partition),
                value: encode(&value),
                condition: Condition::None,
            })
            .collect();
        self.write_fenced(ops, fence).await
    }

    /// Removes committed offsets of a group (OffsetDelete, DeleteGroups), fenced like
    /// [`Catalog::commit_offsets`].
    pub async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<(Uuid, i32)>,
        fence: Option<&LeaseFence>,
    ) -> Result<(), CatalogError> {
        let ops = partitions
            .into_iter()
            .map(|(topic_id, partition)| WriteOp::Delete {
                key: group_offset_key(group, topic_id, partition),
                condition: Condition::None,
            })
            .collect();
        self.write_fenced(ops, fence).await
    }

    /// Writes `ops` in as many store writes as its batch limit needs, each with the fence's
    /// check.
    async fn write_fenced(
        &self,
        mut ops: Vec<WriteOp>,
        fence: Option<&LeaseFence>,
    ) -> Result<(), CatalogError> {
        let per_write = self
            .store
            .max_batch_ops()
            .saturating_sub(usize::from(fence.is_some()))
            .max(1);
        while !ops.is_empty() {
            let rest = ops.split_off(per_write.min(ops.len()));
            let mut batch = std::mem::replace(&mut ops, rest);
            if let Some(f) = fence {
                batch.push(WriteOp::Check {
                    key: lease_key(&f.name),
                    condition: Condition::Version(f.version),
                });
            }
            self.store.write(batch).await?;
        }
        Ok(())
    }

    /// Enters `group` in the group directory (idempotent), fenced like
    /// [`Catalog::commit_offsets`]. Coordinators do it before a group's first commit.
    pub async fn register_group(
        &self,
        group: &str,
        fence: Option<&LeaseFence>,
    ) -> Result<(), CatalogError> {
        let record = GroupRecord {
            format: ITEM_FORMAT,
            registered_at_ms: now_ms(),
        };
        let op = WriteOp::Put {
            key: group_key(group),
            value: encode(&record),
            condition: Condition::None,
        };
        self.write_fenced(vec![op], fence).await
    }

    /// Deletes a group: the committed offsets of `partitions` and its directory entry (in one
    /// write when the store's batch limit allows, the entry last), fenced like
    /// [`Catalog::commit_offsets`].
    pub async fn delete_group(
        &self,
        group: &str,
        partitions: Vec<(Uuid, i32)>,
        fence: Option<&LeaseFence>,
    ) -> Result<(), CatalogError> {
        let mut ops: Vec<WriteOp> = partitions
            .into_iter()
            .map(|(topic_id, partition)| WriteOp::Delete {
                key: group_offset_key(group, topic_id, partition),
                condition: Condition::None,
            })
            .collect();
        ops.push(WriteOp::Delete {
            key: group_key(group),
            condition: Condition::None,
        });
        self.write_fenced(ops, fence).await
    }

    /// Every group in the group directory, sorted.
    pub async fn list_groups(&self) -> Result<Vec<String>, CatalogError> {
        let items = self.store.query(Query::all("group")).await?;
        Ok(items.into_iter().map(|i| i.key.sk).collect())
    }

    /// A group's committed offset for one partition.
    pub async fn committed_offset(
        &self,
        group: &str,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Option<CommittedOffset>, CatalogError> {
        let key = group_offset_key(group, topic_id, partition);
        match self.store.get(&key).await? {
            Some(item) => Ok(Some(decode(&key, &item.value)?)),
            None => Ok(None),
        }
    }

    /// Every committed offset of a group: (topic id, partition, offset).
    pub async fn committed_offsets(
        &self,
        group: &str,
    ) -> Result<Vec<(Uuid, i32, CommittedOffset)>, CatalogError> {
        let items = self
            .store
            .query(Query::all(group_offsets_pk(group)))
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let parsed = item
                .key
                .sk
                .split_once('/')
                .and_then(|(id, p)| Some((Uuid::parse_str(id).ok()?, p.parse::<i32>().ok()?)));
            let Some((topic_id, partition)) = parsed else {
                return Err(MetaStoreError::Corrupt {
                    key: item.key.clone(),
                    reason: "not a committed-offset key".into(),
                }
                .into());
            };
            out.push((topic_id, partition, decode(&item.key, &item.value)?));
        }
        Ok(out)
    }

    /// Takes or renews the lease `name` for `owner`: at once if it is ours, free or released,
    /// and if another owner holds it only once this process has seen it unchanged for a lease
    /// time of its own clock (see [`crate::lease_observations`]; no wall clock decides).
    /// Returns the lease and its item version (the fencing token for later writes).
    pub async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        owner_addr: &str,
        ttl: Duration,
    ) -> Result<Option<(LeaseRecord, u64)>, CatalogError> {
        self.acquire_lease_advertising(name, owner, owner_addr, &BTreeMap::new(), ttl)
            .await
    }

    /// [`Catalog::acquire_lease`], publishing the holder's named listeners in the lease.
    pub async fn acquire_lease_advertising(
        &self,
        name: &str,
        owner: &str,
        owner_addr: &str,
        listeners: &BTreeMap<String, String>,
        ttl: Duration,
    ) -> Result<Option<(LeaseRecord, u64)>, CatalogError> {
        let key = lease_key(name);
        let now = self.wall_now_ms();
        let current = self.store.get(&key).await?;
        let (epoch, condition) = match &current {
            None => (1, Condition::Absent),
            Some(item) => {
                let lease: LeaseRecord = decode(&key, &item.value)?;
                if lease.owner != owner
                    && !self
                        .lease_observations
                        .may_take_over(name, &lease, item.version, ttl)
                {
                    return Ok(None);
                }
                let epoch = if lease.owner == owner {
                    lease.epoch
                } else {
                    lease.epoch + 1
                };
                (epoch, Condition::Version(item.version))
            }
        };
        let lease = LeaseRecord {
            format: LEASE_FORMAT,
            owner: owner.to_string(),
            owner_addr: owner_addr.to_string(),
            epoch,
            expires_at_ms: now + ttl.as_millis() as i64,
            ttl_ms: ttl.as_millis() as u64,
            released: false,
            listeners: listeners.clone(),
        };
        let version = current.map(|i| i.version + 1).unwrap_or(1);
        match self
            .store
            .write(vec![WriteOp::Put {
                key,
                value: encode(&lease),
                condition,
            }])
            .await
        {
            Ok(()) => {
                self.lease_observations.forget(name);
                Ok(Some((lease, version)))
            }
            Err(MetaStoreError::ConditionFailed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

// Test-only seams live here, after the code the IAM derivation (tests/infra) reads: it
// stops at the file's first `#[cfg(test)]`.
#[cfg(test)]
impl Catalog {
    /// The same catalog with a wall clock `skew_ms` ahead of the system's (negative: behind).
    pub(crate) fn with_wall_clock_skew_ms(mut self, skew_ms: i64) -> Self {
        self.wall_clock_skew_ms = skew_ms;
        self
    }
}

#[cfg(test)]
mod create_topic_tests {
    use std::sync::Arc;

    use super::*;
    use crate::meta_store::MemoryMetaStore;

    #[tokio::test]
    async fn a_topic_wider_than_one_write_batch_is_created_whole() {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::with_max_batch_ops(10)));
        let topic = catalog
            .create_topic("wide", 95, BTreeMap::new())
            .await
            .expect("create");
        for p in 0..95 {
            let (row, _) = catalog
                .partition(topic.topic_id, p)
                .await
                .expect("read")
                .expect("row");
            assert_eq!(row.next_offset, 0);
        }
        assert_eq!(
            catalog
                .topic("wide")
                .await
                .expect("read")
                .map(|t| t.partitions),
            Some(95)
        );
        assert!(matches!(
            catalog.create_topic("wide", 3, BTreeMap::new()).await,
            Err(CatalogError::TopicExists(_))
        ));
        // Exactly one batch's worth (rows + topic item) and a single partition work too.
        catalog
            .create_topic("exact", 9, BTreeMap::new())
            .await
            .expect("exact");
        catalog
            .create_topic("one", 1, BTreeMap::new())
            .await
            .expect("one");
    }

    #[tokio::test]
    async fn group_offsets_are_stored_per_partition_and_listed_per_group() {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::with_max_batch_ops(4)));
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let at = |topic: &str, offset: i64| CommittedOffset {
            format: ITEM_FORMAT,
            topic: topic.into(),
            offset,
            leader_epoch: -1,
            metadata: Some(format!("m{offset}")),
            committed_at_ms: 1,
        };
        // Ten offsets: more than one write of four operations.
        let mut offsets: Vec<_> = (0..8).map(|p| (a, p, at("a", 10 + p as i64))).collect();
        offsets.push((b, 0, at("b", 5)));
        offsets.push((b, 1, at("b", 6)));
        catalog
            .commit_offsets("g/1", offsets, None)
            .await
            .expect("commit");
        catalog
            .commit_offsets("other", vec![(a, 0, at("a", 99))], None)
            .await
            .expect("commit other");
        // Last write wins.
        catalog
            .commit_offsets("g/1", vec![(a, 3, at("a", 42))], None)
            .await
            .expect("recommit");
        assert_eq!(
            catalog
                .committed_offset("g/1", a, 3)
                .await
                .expect("read")
                .map(|o| o.offset),
            Some(42)
        );
        assert_eq!(
            catalog.committed_offset("g/1", b, 7).await.expect("read"),
            None
        );
        let all = catalog.committed_offsets("g/1").await.expect("list");
        assert_eq!(all.len(), 10, "only this group's offsets");
        assert!(
            all.iter()
                .any(|(t, p, o)| *t == b && *p == 1 && o.offset == 6)
        );
        assert_eq!(
            catalog
                .committed_offsets("other")
                .await
                .expect("list")
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn the_group_directory_lists_registered_groups_until_they_are_deleted() {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::with_max_batch_ops(2)));
        let t = Uuid::from_u128(9);
        for g in ["b", "a/1", "a/1"] {
            catalog.register_group(g, None).await.expect("register");
        }
        assert_eq!(catalog.list_groups().await.expect("list"), ["a/1", "b"]);
        let at = |offset| CommittedOffset {
            format: ITEM_FORMAT,
            topic: "t".into(),
            offset,
            leader_epoch: -1,
            metadata: None,
            committed_at_ms: 0,
        };
        let offsets = (0..3).map(|p| (t, p, at(p as i64))).collect();
        catalog
            .commit_offsets("a/1", offsets, None)
            .await
            .expect("commit");
        // Wider than one write: offsets and entry still all go.
        catalog
            .delete_group("a/1", (0..3).map(|p| (t, p)).collect(), None)
            .await
            .expect("delete");
        assert!(
            catalog
                .committed_offsets("a/1")
                .await
                .expect("read")
                .is_empty()
        );
        assert_eq!(catalog.list_groups().await.expect("list"), ["b"]);
    }
}

#[cfg(test)]
mod topic_lookup_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::meta_store::{Item, MemoryMetaStore};

    /// A memory store whose list queries are counted, yield once, wait for the test's
    /// go-ahead (`gate`, when set) and fail on demand.
    #[derive(Debug, Default)]
    struct TestStore {
        inner: MemoryMetaStore,
        queries: AtomicUsize,
        failing: AtomicBool,
        gate: Option<tokio::sync::Semaphore>,
    }

    #[async_trait]
    impl MetaStore for TestStore {
        async fn get(&self, key: &ItemKey) -> Result<Option<Item>, MetaStoreError> {
            self.inner.get(key).await
        }
        async fn query(&self, query: Query) -> Result<Vec<Item>, MetaStoreError> {
            self.queries.fetch_add(1, Ordering::SeqCst);
            let _pass = match &self.gate {
                Some(gate) => Some(gate.acquire().await),
                None => None,
            };
            tokio::task::yield_now().await;
            if self.failing.load(Ordering::SeqCst) {
                return Err(MetaStoreError::Unavailable("injected".into()));
            }
            self.inner.query(query).await
        }
        async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
            self.inner.write(ops).await
        }
        fn max_batch_ops(&self) -> usize {
            self.inner.max_batch_ops()
        }
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_reload_and_a_fresh_miss_reloads_nothing() {
        let store = Arc::new(TestStore::default());
        let catalog = Arc::new(Catalog::new(store.clone()));
        catalog
            .create_topic("known", 1, BTreeMap::new())
            .await
            .expect("create");
        let before = store.queries.load(Ordering::SeqCst);
        let lookups: Vec<_> = (0..50)
            .map(|_| {
                let catalog = catalog.clone();
                tokio::spawn(async move { catalog.topic("missing").await })
            })
            .collect();
        for l in lookups {
            assert!(l.await.expect("task").expect("lookup").is_none());
        }
        assert_eq!(store.queries.load(Ordering::SeqCst) - before, 1);
        // Asked again at once: answered from that reload.
        assert!(catalog.topic("missing").await.expect("lookup").is_none());
        assert_eq!(store.queries.load(Ordering::SeqCst) - before, 1);
        assert!(catalog.topic("known").await.expect("lookup").is_some());
    }

    #[tokio::test]
    async fn adding_partitions_never_overwrites_a_row_and_refuses_shrinking() {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::with_max_batch_ops(3)));
        let t = catalog
            .create_topic("grow", 2, BTreeMap::new())
            .await
            .expect("create");
        // A row of partition 2 already there (a half-finished earlier attempt's, say).
        let row = PartitionRecord {
            format: ITEM_FORMAT,
            next_offset: 5,
            log_start_offset: 0,
            bytes: 0,
            max_timestamp: -1,
        };
        catalog
            .store()
            .write(vec![WriteOp::Put {
                key: partition_key(t.topic_id, 2),
                value: encode(&row),
                condition: Condition::Absent,
            }])
            .await
            .expect("row");
        let grown = catalog.add_partitions("grow", 7).await.expect("grow");
        assert_eq!(grown.partitions, 7);
        let offsets = |p| {
            let catalog = &catalog;
            async move {
                catalog
                    .partition(t.topic_id, p)
                    .await
                    .expect("read")
                    .map(|(r, _)| r.next_offset)
            }
        };
        assert_eq!(offsets(2).await, Some(5));
        for p in 3..7 {
            assert_eq!(offsets(p).await, Some(0));
        }
        assert_eq!(
            catalog
                .topic("grow")
                .await
                .expect("read")
                .map(|t| t.partitions),
            Some(7)
        );
        assert!(matches!(
            catalog.add_partitions("grow", 7).await,
            Err(CatalogError::InvalidPartitions(7))
        ));
        assert!(matches!(
            catalog.add_partitions("nope", 9).await,
            Err(CatalogError::UnknownTopic(_))
        ));
    }

    /// A lookup whose future stops being polled mid-reload (a request future queued behind a
    /// busy connection) must not hold up lookups elsewhere (librdkafka's 0107 stalled on it).
    #[tokio::test]
    async fn a_lookup_that_is_no_longer_polled_does_not_block_the_others() {
        let store = Arc::new(TestStore {
            gate: Some(tokio::sync::Semaphore::new(0)),
            ..TestStore::default()
        });
        let catalog = Arc::new(Catalog::new(store.clone()));
        catalog
            .store()
            .write(vec![WriteOp::Put {
                key: topic_key("t"),
                value: encode(&TopicRecord {
                    format: ITEM_FORMAT,
                    name: "t".into(),
                    topic_id: Uuid::new_v4(),
                    partitions: 1,
                    configs: BTreeMap::new(),
                    created_at_ms: 0,
                }),
                condition: Condition::Absent,
            }])
            .await
            .expect("topic");
        // The first lookup starts the reload, then is never polled again.
        let mut parked = Box::pin(catalog.topic("t"));
        assert!(futures::poll!(parked.as_mut()).is_pending());
        if let Some(gate) = &store.gate {
            gate.add_permits(10);
        }
        let other = tokio::time::timeout(Duration::from_secs(5), catalog.topic("t")).await;
        assert!(
            matches!(other, Ok(Ok(Some(_)))),
            "a second lookup waited on the parked one: {other:?}"
        );
        drop(parked);
    }

    #[tokio::test]
    async fn a_store_error_is_an_error_never_an_unknown_topic() {
        let store = Arc::new(TestStore::default());
        let catalog = Catalog::new(store.clone());
        store.failing.store(true, Ordering::SeqCst);
        let result = catalog.topic("anything").await;
        assert!(
            matches!(&result, Err(e) if e.is_retryable()),
            "lookup during an outage: {result:?}"
        );
        assert!(catalog.topic_by_id(Uuid::new_v4()).await.is_err());
    }
}

#[cfg(test)]
mod index_page_tests {
    use std::sync::Arc;

    use super::*;
    use crate::meta_store::MemoryMetaStore;

    fn entry(base: i64, last: i64) -> IndexEntry {
        IndexEntry {
            format: ITEM_FORMAT,
            base_offset: base,
            last_offset: last,
            segment_key: format!("segments/00/{base:013}-x.kseg"),
            byte_start: 0,
            byte_len: 100,
            batch_count: 1,
            record_count: (last - base + 1) as u64,
            first_timestamp: base,
            max_timestamp: last,
            running_max_timestamp: Some(last),
        }
    }

    fn put(key: ItemKey, value: Bytes) -> WriteOp {
        WriteOp::Put {
            key,
            value,
            condition: Condition::None,
        }
    }

    /// Offsets 0..=9 as two single entries (format 1) and 10..=39 as a page of three.
    async fn mixed_index(catalog: &Catalog, topic: Uuid) {
        let page = IndexPage {
            entries: vec![entry(10, 19), entry(20, 29), entry(30, 39)],
        };
        let ops = vec![
            put(index_key(topic, 0, 4), encode(&entry(0, 4))),
            put(index_key(topic, 0, 9), encode(&entry(5, 9))),
            put(index_key(topic, 0, 39), encode(&page)),
        ];
        catalog.store().write(ops).await.expect("write");
    }

    fn lasts(entries: &[IndexEntry]) -> Vec<i64> {
        entries.iter().map(|e| e.last_offset).collect()
    }

    #[tokio::test]
    async fn pages_and_single_entries_read_as_one_sequence_of_entries() {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::new()));
        let topic = Uuid::new_v4();
        mixed_index(&catalog, topic).await;
        let all = catalog.index_entries_from(topic, 0, 0, None).await;
        assert_eq!(lasts(&all.expect("read")), [4, 9, 19, 29, 39]);
        // Inside a page: the entries before the offset are left out.
        let from_25 = catalog.index_entries_from(topic, 0, 25, None).await;
        assert_eq!(lasts(&from_25.expect("read")), [29, 39]);
        // The limit counts entries, not items.
        let one = catalog.index_entries_from(topic, 0, 7, Some(1)).await;
        assert_eq!(lasts(&one.expect("read")), [9]);
        let two = catalog.index_entries_from(topic, 0, 12, Some(2)).await;
        assert_eq!(lasts(&two.expect("read")), [19, 29]);
        let past = catalog.index_entries_from(topic, 0, 40, None).await;
        assert!(past.expect("read").is_empty());
    }

    #[tokio::test]
    async fn entries_of_overlapping_pages_are_read_once() {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::new()));
        let topic = Uuid::new_v4();
        let page = |entries| IndexPage { entries };
        let ops = vec![
            put(
                index_key(topic, 0, 19),
                encode(&page(vec![entry(0, 9), entry(10, 19)])),
            ),
            put(
                index_key(topic, 0, 29),
                encode(&page(vec![entry(0, 9), entry(10, 19), entry(20, 29)])),
            ),
        ];
        catalog.store().write(ops).await.expect("write");
        let all = catalog.index_entries_from(topic, 0, 0, None).await;
        assert_eq!(lasts(&all.expect("read")), [9, 19, 29]);
        let from_15 = catalog.index_entries_from(topic, 0, 15, Some(2)).await;
        assert_eq!(lasts(&from_15.expect("read")), [19, 29]);
    }

    #[test]
    fn a_page_is_stored_as_compact_arrays_and_reads_back_exactly() {
        let mut odd = entry(40, 49);
        odd.segment_key = entry(10, 19).segment_key;
        odd.first_timestamp = i64::MIN;
        odd.max_timestamp = i64::MAX;
        odd.running_max_timestamp = None;
        let page = IndexPage {
            entries: vec![entry(10, 19), entry(20, 29), entry(30, 39), odd],
        };
        let stored = encode(&page);
        let text = std::str::from_utf8(&stored).expect("json");
        assert!(text.starts_with(r#"{"format":3,"segments":["#), "{text}");
        // The segment the first and the last entry share is written once.
        assert_eq!(text.matches(".kseg").count(), 3, "{text}");
        let key = index_key(Uuid::new_v4(), 0, 49);
        assert_eq!(
            decode_index_item(&key, &stored).expect("decode"),
            page.entries
        );
        let as_objects = serde_json::json!({"format": 2, "entries": page.entries});
        let objects = serde_json::to_vec(&as_objects).expect("json");
        assert!(
            stored.len() * 2 < objects.len(),
            "{} vs {}",
            stored.len(),
            objects.len()
        );
        // Format 2, as the first shard-log releases wrote it, still reads.
        assert_eq!(
            decode_index_item(&key, &objects).expect("decode"),
            page.entries
        );
    }

    #[test]
    fn a_short_page_reads_back_exactly_and_costs_one_write_unit_where_format_3_costs_two() {
        // What a 2 s fold of one partition at 1 MiB/s over 8 partitions held in the bench:
        // 13 segments, one entry each.
        let start_ms = 1_796_456_652_756;
        let mut entries: Vec<IndexEntry> = (0..13)
            .map(|i| {
                let base = 457 + i * 19;
                let mut e = entry(base, base + 18);
                e.segment_key = crate::keys::new_segment_key(start_ms + i * 151);
                e.byte_start = 53_446 + i as u64 * 311;
                e.byte_len = 17_870;
                e.batch_count = 5;
                e.first_timestamp = start_ms - 220 + i * 151;
                e.max_timestamp = e.first_timestamp + 125;
                e.running_max_timestamp = Some(e.max_timestamp);
                e
            })
            .collect();
        // Odd ones: a key of another shape, extreme timestamps and offsets, a segment twice.
        let mut odd = entry(i64::MAX - 9, i64::MAX);
        odd.segment_key = "segments/zz/hand-made".into();
        odd.first_timestamp = i64::MIN;
        odd.max_timestamp = i64::MAX;
        odd.running_max_timestamp = None;
        let mut again = entry(0, 0);
        again.segment_key = entries[0].segment_key.clone();
        entries.push(odd);
        entries.push(again);
        let page = IndexPage { entries };
        let key = index_key(Uuid::new_v4(), 3, 0);
        let short = page.encode_short();
        let text = std::str::from_utf8(&short).expect("json");
        assert!(text.starts_with(r#"{"f":4,"s":["#), "{text}");
        assert_eq!(
            decode_index_item(&key, &short).expect("decode"),
            page.entries
        );

        let busy = IndexPage {
            entries: page.entries[..13].to_vec(),
        };
        let units = |value: &Bytes| {
            crate::meta_store::capacity::item_write_units(
                &WriteOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                    condition: Condition::None,
                },
                false,
            )
        };
        assert_eq!(units(&encode(&busy)), 2, "format 3");
        assert_eq!(units(&busy.encode_short()), 1, "format 4");
    }

    #[test]
    fn a_page_entry_naming_a_missing_segment_is_corrupt() {
        let key = index_key(Uuid::new_v4(), 0, 9);
        let value = br#"{"format":3,"segments":["a"],"entries":[[1,0,9,0,10,1,10,0,0,0]]}"#;
        assert!(matches!(
            decode_index_item(&key, value),
            Err(MetaStoreError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn a_page_without_entries_is_reported_corrupt() {
        let catalog = Catalog::new(Arc::new(MemoryMetaStore::new()));
        let topic = Uuid::new_v4();
        let empty = IndexPage { entries: vec![] };
        let ops = vec![put(index_key(topic, 0, 9), encode(&empty))];
        catalog.store().write(ops).await.expect("write");
        let read = catalog.index_entries_from(topic, 0, 0, None).await;
        assert!(matches!(
            read,
            Err(CatalogError::Store(MetaStoreError::Corrupt { .. }))
        ));
    }
}
