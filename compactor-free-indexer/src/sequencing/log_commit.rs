//! Layout 2's commit path (see [`kafscale_shared::shard_log`]): a commit is one item appended
//! to the shard's log with an `Absent` condition at the next sequence number.
//!
//! The owner keeps every log item above the fold checkpoint in memory and the rows and producer
//! states it has read, with those items replayed onto them. An append that finds its sequence
//! number taken (another process wrote it: a deposed owner that has not noticed yet, or an
//! earlier append of ours whose answer was lost) reads the log forward, replays what it finds,
//! and plans again at the next number; so no two appends are ever computed from different
//! prefixes, whoever holds the lease. A retry of a commit is answered from the log: every item
//! of the last `segment_commit_max_age` is remembered by its record name.
//!
//! Group commit: [`Indexer::append_all`] takes the commits the shard's queue handed over (see
//! `commit_queue.rs`) and writes their items, each at its own consecutive sequence number, in
//! one store request that lands whole or not at all. Each is planned on the cache as the one
//! before it left it (a planned item is applied to the cache before the write, and undone if
//! the write does not land), so the offsets and producer checks are those of one commit after
//! the other. A lone commit is a group of one: one `Put`, as it always was.

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use kafscale_shared::catalog::{self, Catalog, CatalogError, PartitionRecord, ProducerRecord};
use kafscale_shared::meta_store::dynamodb::{self, MAX_BATCH_OPS, MAX_TRANSACTION_BYTES};
use kafscale_shared::meta_store::{Condition, MetaStoreError, WriteOp};
use kafscale_shared::sequencer::{BatchOutcome, CommitBatch, CommitRequest, SequencerError};
use kafscale_shared::shard_log::{
    self, FoldCheckpoint, LogEntry, LogOutcome, ProducerDelta, SHARD_LOG_FORMAT, ShardLogItem,
    fold_checkpoint_key, shard_log_key,
};
use kafscale_shared::watermarks::PartitionOffsets;
use tracing::{Instrument, debug, warn};

use super::plan::CommitPlan;
use super::{
    Indexer, PartitionId, PartitionState, ProducerKey, ShardState, StoredProducer, same_batch_count,
};

/// Appends tried per commit chunk before the commit is answered "retry" (each failed one means
/// another writer appended meanwhile, and was read).
const APPEND_ATTEMPTS: usize = 4;

/// How much further back than the answer horizon an opening owner reads the log, for items
/// appended by a process whose clock was behind.
const CLOCK_SKEW_MARGIN_MS: i64 = 60_000;

/// Batches per log item at most: each costs the item about 150 bytes (entry, outcome and
/// producer delta), so an item stays well under DynamoDB's 400 KB.
pub(super) const BATCHES_PER_LOG_ITEM: usize = 2_000;

/// A shard's log as its owner holds it.
#[derive(Debug, Default)]
pub(super) struct LogState {
    /// The last sequence number known to be taken; the next append goes to the one after.
    pub last_seq: u64,
    /// The fold checkpoint as last read or written, with its item version.
    pub folded_through: u64,
    pub checkpoint_version: u64,
    /// The items above the checkpoint, in order: what the next fold writes, and what is
    /// replayed onto rows and producer states read from the store.
    pub unfolded: VecDeque<(u64, Arc<ShardLogItem>)>,
    /// Answers to retries, by record name, with the time each was logged (oldest first).
    pub answers: HashMap<String, Vec<BatchOutcome>>,
    pub answer_order: VecDeque<(i64, String)>,
    /// An append's outcome is unknown, or another writer took a sequence number: read the log
    /// before the next append.
    pub behind: bool,
    /// Write log items and index pages short (layout 3), as the cluster's settings said when
    /// the shard was acquired.
    pub short_items: bool,
}

impl LogState {
    /// Remembers an item's answer and forgets those logged before `horizon_ms`.
    fn remember(&mut self, item: &ShardLogItem, record_name: &str, horizon_ms: i64) {
        if let Some(outcomes) = item.outcomes()
            && self
                .answers
                .insert(record_name.to_string(), outcomes)
                .is_none()
        {
            self.answer_order
                .push_back((item.committed_at_ms, record_name.to_string()));
        }
        while let Some((at, _)) = self.answer_order.front() {
            if *at >= horizon_ms {
                break;
            }
            if let Some((_, name)) = self.answer_order.pop_front() {
                self.answers.remove(&name);
            }
        }
    }
}

/// The log item that records `plan` for `segment_key` (chunk `chunk` of it, if split).
fn log_item_of(
    plan: &CommitPlan,
    segment_key: &str,
    segment_size: u64,
    chunk: Option<u32>,
) -> ShardLogItem {
    let mut item = ShardLogItem {
        format: SHARD_LOG_FORMAT,
        segment_key: segment_key.to_string(),
        segment_size,
        committed_at_ms: plan.now_ms,
        chunk,
        topics: Vec::new(),
        entries: Vec::new(),
        producers: Vec::new(),
        outcomes: plan.outcomes.iter().map(|o| LogOutcome::from(*o)).collect(),
    };
    for id in &plan.touched {
        for e in plan.entries.get(id).into_iter().flatten() {
            let topic = item.topic_position(id.0);
            item.entries.push(LogEntry::of(topic, id.1, e));
        }
    }
    for accepted in &plan.accepted {
        let topic = item.topic_position(accepted.producer.0);
        item.producers.push(ProducerDelta {
            topic,
            partition: accepted.producer.1,
            producer_id: accepted.producer.2,
            epoch: accepted.epoch,
            batch: accepted.batch,
        });
    }
    item
}

/// Creates `shard`'s checkpoint at 0 if it has none, switching the shard to layout 2.
pub(super) async fn create_checkpoint(catalog: &Catalog, shard: u32) -> Result<(), CatalogError> {
    let checkpoint = FoldCheckpoint {
        format: SHARD_LOG_FORMAT,
        folded_through: 0,
    };
    let op = WriteOp::Put {
        key: fold_checkpoint_key(shard),
        value: catalog::encode(&checkpoint),
        condition: Condition::Absent,
    };
    match catalog.store().write(vec![op]).await {
        Ok(()) | Err(MetaStoreError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `shard`'s log items from `start` on.
async fn read_log(
    catalog: &Catalog,
    shard: u32,
    start: Bound<u64>,
) -> Result<Vec<(u64, ShardLogItem)>, CatalogError> {
    Ok(shard_log::read_items(catalog.store().as_ref(), shard, start).await?)
}

impl Indexer {
    /// The earliest commit time whose answer is still kept.
    pub(super) fn answer_horizon_ms(&self) -> i64 {
        let max_age = self.config.segment_commit_max_age.as_millis() as i64;
        catalog::now_ms().saturating_sub(max_age)
    }

    /// Opens `shard`'s log after acquiring it: `None` if the shard is on layout 1. Reads the
    /// checkpoint and the newest items: those above the checkpoint are to be folded and
    /// replayed, and the answers of the last `segment_commit_max_age` are kept for retries.
    /// Older folded items stay in the store as commit records; they are not read.
    pub(super) async fn open_log(&self, shard: u32) -> Result<Option<LogState>, CatalogError> {
        let store = self.catalog.store().as_ref();
        // A cluster switched after this process started is noticed at the next acquisition.
        let cluster = kafscale_shared::shards::read_cluster(store).await?;
        let switch = self.config.shard_log || cluster.is_some_and(|c| c.on_shard_log());
        // Without cluster settings (tests of the indexer alone) this release's newest form.
        let short_items = cluster.map_or(self.config.shard_log, |c| c.short_items());
        if switch {
            create_checkpoint(&self.catalog, shard).await?;
        }
        let Some((checkpoint, version)) = shard_log::read_checkpoint(store, shard).await? else {
            return Ok(None);
        };
        let mut log = LogState {
            last_seq: checkpoint.folded_through,
            folded_through: checkpoint.folded_through,
            checkpoint_version: version,
            short_items,
            ..LogState::default()
        };
        let horizon = self.answer_horizon_ms();
        // Commit times come from the clocks of whoever appended: read a margin further back.
        let read_back_to = horizon.saturating_sub(CLOCK_SKEW_MARGIN_MS);
        let folded_through = log.folded_through;
        let newest = shard_log::read_newest(store, shard, |seq, item| {
            seq > folded_through || item.committed_at_ms >= read_back_to
        })
        .await?;
        for (seq, item) in newest {
            log.remember(&item, &item.record_name(), horizon);
            if seq > log.folded_through {
                if seq != log.last_seq + 1 {
                    return Err(log_gap(shard, log.last_seq + 1, seq));
                }
                log.unfolded.push_back((seq, Arc::new(item)));
                log.last_seq = seq;
            }
        }
        debug!(
            shard,
            last_seq = log.last_seq,
            unfolded = log.unfolded.len(),
            "shard log opened"
        );
        Ok(Some(log))
    }

    /// Reads the items appended after the last one known and replays them onto the cache.
    async fn catch_up(&self, shard: u32, state: &mut ShardState) -> Result<(), CatalogError> {
        let Some(log) = state.log.as_ref() else {
            return Ok(());
        };
        let after = log.last_seq;
        let items = read_log(&self.catalog, shard, Bound::Excluded(after)).await?;
        let horizon = self.answer_horizon_ms();
        for (seq, item) in items {
            let expected = state.log.as_ref().map_or(0, |l| l.last_seq + 1);
            if seq != expected {
                return Err(log_gap(shard, expected, seq));
            }
            self.take_logged(state, seq, Arc::new(item), horizon);
        }
        if let Some(log) = state.log.as_mut() {
            log.behind = false;
        }
        Ok(())
    }

    /// Takes a log item another writer appended (read back): its entries and producer batches
    /// move the cached rows and states, its partitions' watermarks are published and it joins
    /// the log as held.
    fn take_logged(&self, state: &mut ShardState, seq: u64, item: Arc<ShardLogItem>, horizon: i64) {
        apply_item(state, &item);
        self.publish_item_rows(state, &item);
        hold_item(state, seq, item, horizon);
    }

    /// Publishes the cached rows of the partitions `item` appended to.
    fn publish_item_rows(&self, state: &ShardState, item: &ShardLogItem) {
        for (entry, topic_id) in entries_with_topic(item) {
            if let Some(part) = state.partitions.get(&(topic_id, entry.partition)) {
                self.publish_row(topic_id, entry.partition, &part.record);
            }
        }
    }

    /// Publishes a partition's offsets as `row` has them.
    pub(super) fn publish_row(&self, topic_id: uuid::Uuid, partition: i32, row: &PartitionRecord) {
        self.watermarks.publish(
            topic_id,
            partition,
            PartitionOffsets {
                log_start_offset: row.log_start_offset,
                high_watermark: row.next_offset,
            },
        );
    }

    /// A row read from the store, with the unfolded log replayed onto it.
    pub(super) fn replay_row(state: &ShardState, id: PartitionId, row: &mut PartitionRecord) {
        let Some(log) = state.log.as_ref() else {
            return;
        };
        for (_, item) in &log.unfolded {
            for e in &item.entries {
                if e.partition == id.1 && item.topic_id(e.topic) == Some(id.0) {
                    e.apply_to(row);
                }
            }
        }
    }

    /// A producer state read from the store (`None`: no row), with the unfolded log replayed
    /// onto it. The version stays the stored row's; 0 stands for "no row in the store".
    pub(super) fn replay_producer_state(
        state: &ShardState,
        key: ProducerKey,
        stored: Option<(ProducerRecord, u64)>,
    ) -> Option<(ProducerRecord, u64)> {
        let Some(log) = state.log.as_ref() else {
            return stored;
        };
        let mut current = stored;
        for (_, item) in &log.unfolded {
            for d in &item.producers {
                if (d.partition, d.producer_id) == (key.1, key.2)
                    && item.topic_id(d.topic) == Some(key.0)
                {
                    replay_producer(Some(&mut current), d, item.committed_at_ms);
                }
            }
        }
        current
    }

    /// Appends one commit (or one chunk of one) as a group of one.
    pub(super) async fn append_one(
        &self,
        state: &mut ShardState,
        commit: LogCommit<'_>,
    ) -> Result<Vec<BatchOutcome>, SequencerError> {
        let shard = commit.request.shard;
        let answers = self.append_all(state, shard, &[commit]).await;
        answers
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(unanswered()))
    }

    /// Appends `commits` to `shard`'s log in order, each as its own item at the next sequence
    /// numbers, in as few store requests as the limits allow (one unless they pass
    /// [`MAX_BATCH_OPS`] items, [`MAX_TRANSACTION_BYTES`] or name one segment twice), or
    /// answers a retry from the log. Answers each commit on its own, in order: a commit that is
    /// refused does not fail the others.
    pub(super) async fn append_all(
        &self,
        state: &mut ShardState,
        shard: u32,
        commits: &[LogCommit<'_>],
    ) -> Vec<Result<Vec<BatchOutcome>, SequencerError>> {
        let mut answers: Vec<Option<LogAnswer>> = commits.iter().map(|_| None).collect();
        let mut conflicts = 0;
        while answers.iter().any(Option::is_none) {
            let failed = match self.append_round(state, shard, commits, &mut answers).await {
                Ok(Round::Done) => {
                    conflicts = 0;
                    continue;
                }
                Ok(Round::Conflict) if conflicts + 1 < APPEND_ATTEMPTS => {
                    conflicts += 1;
                    continue;
                }
                Ok(Round::Conflict) => SequencerError::StoreUnavailable(format!(
                    "shard {shard} log moved under {APPEND_ATTEMPTS} appends; retry"
                )),
                Err(e) => e,
            };
            for answer in answers.iter_mut().filter(|a| a.is_none()) {
                *answer = Some(Err(failed.clone()));
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(unanswered())))
            .collect()
    }

    /// One store request of a group: reads what other writers appended if behind, answers the
    /// next unanswered commits that are retries or refused, plans the others each on the cache
    /// the previous one left, and writes their items together.
    async fn append_round(
        &self,
        state: &mut ShardState,
        shard: u32,
        commits: &[LogCommit<'_>],
        answers: &mut [Option<LogAnswer>],
    ) -> Result<Round, SequencerError> {
        if state.log.as_ref().is_some_and(|l| l.behind) {
            self.catch_up(shard, state).await.map_err(store_error)?;
        }
        let Some(log) = state.log.as_ref() else {
            return Err(SequencerError::StoreUnavailable(format!(
                "shard {shard} has no open log"
            )));
        };
        let max_items = self.catalog.store().max_batch_ops().min(MAX_BATCH_OPS);
        let mut pending = Pending::new(shard, log.last_seq + 1, log.short_items, max_items);
        for (k, commit) in commits.iter().enumerate() {
            if answers[k].is_some() {
                continue;
            }
            match self.next_step(state, commit, &pending).await {
                Step::Answer(answer) => answers[k] = Some(answer),
                Step::Plan(item, outcomes) => {
                    if !pending.push(state, k, item, outcomes) {
                        break;
                    }
                }
                Step::Stop => break,
            }
        }
        self.write_pending(state, pending, commits, answers).await
    }

    /// What to do with `commit` in a round whose request holds `pending` so far.
    async fn next_step(
        &self,
        state: &mut ShardState,
        commit: &LogCommit<'_>,
        pending: &Pending,
    ) -> Step {
        let request = commit.request;
        let record_name = commit.record_name();
        let answered = state
            .log
            .as_ref()
            .and_then(|l| l.answers.get(&record_name).cloned());
        if let Some(outcomes) = answered {
            // Recalling reloads rows from the store, which would drop the pending items'
            // changes from the cache: a retry waits for the next request.
            if !pending.is_empty() {
                return Step::Stop;
            }
            return Step::Answer(self.recall(state, commit, outcomes).await);
        }
        // A second commit of one segment is answered from the log once the first has landed.
        if pending.is_full() || pending.names(&record_name) {
            return Step::Stop;
        }
        if self.is_expired(&request.segment_key) {
            warn!(segment = %request.segment_key, "refusing the commit of an expired segment");
            return Step::Answer(Err(SequencerError::SegmentExpired(
                request.segment_key.clone(),
            )));
        }
        let loaded = match self.load_for(state, commit.batches).await {
            Ok(loaded) => loaded,
            Err(e) => return Step::Answer(Err(e)),
        };
        let plan = CommitPlan::new(
            &request.segment_key,
            commit.batches,
            loaded,
            catalog::now_ms(),
        );
        let item = log_item_of(
            &plan,
            &request.segment_key,
            request.segment_size,
            commit.chunk,
        );
        Step::Plan(item, plan.outcomes)
    }

    /// The answer to a retry of a commit that is in the log.
    async fn recall(
        &self,
        state: &mut ShardState,
        commit: &LogCommit<'_>,
        outcomes: Vec<BatchOutcome>,
    ) -> LogAnswer {
        same_batch_count(&commit.request.segment_key, &outcomes, commit.batches)?;
        // The append may have landed unanswered, so nothing published its offsets.
        self.publish_stored(state, commit.batches).await?;
        Ok(outcomes)
    }

    /// Writes the pending items in one request, all or none. Landed: the log takes them and
    /// their commits are answered. Sequence number taken (another writer appended): the cache
    /// is put back and the round is to be tried again. Any other failure answers their commits
    /// with it; the log is read again before the next append, as the write may have landed.
    async fn write_pending(
        &self,
        state: &mut ShardState,
        pending: Pending,
        commits: &[LogCommit<'_>],
        answers: &mut [Option<LogAnswer>],
    ) -> Result<Round, SequencerError> {
        if pending.is_empty() {
            return Ok(Round::Done);
        }
        let Pending {
            shard,
            first_seq,
            ops,
            planned,
            undo,
            ..
        } = pending;
        let items = ops.len();
        let span = tracing::info_span!("store_write", items, seq = first_seq);
        for caller in planned
            .iter()
            .filter_map(|p| commits[p.commit].caller.clone())
        {
            span.follows_from(caller);
        }
        let written = self.catalog.store().write(ops).instrument(span).await;
        match written {
            Ok(()) => {
                self.metrics.log_writes.increment(1);
                self.metrics.log_items.increment(items as u64);
                let horizon = self.answer_horizon_ms();
                for (seq, p) in (first_seq..).zip(planned) {
                    self.publish_item_rows(state, &p.item);
                    hold_item(state, seq, p.item, horizon);
                    answers[p.commit] = Some(Ok(p.outcomes));
                }
                if let Some(log) = state.log.as_mut() {
                    log.behind = false;
                }
                state.unsettled = false;
                Ok(Round::Done)
            }
            Err(MetaStoreError::ConditionFailed { .. }) => {
                undo.restore(state);
                debug!(
                    shard,
                    seq = first_seq,
                    items,
                    "sequence number taken; reading the log"
                );
                Ok(Round::Conflict)
            }
            Err(e) => {
                undo.restore(state);
                let failed = SequencerError::StoreUnavailable(e.to_string());
                for p in planned {
                    answers[p.commit] = Some(Err(failed.clone()));
                }
                Ok(Round::Done)
            }
        }
    }
}

/// One log item to append: a whole commit, or one chunk of a commit too large for one item.
pub(super) struct LogCommit<'a> {
    pub request: &'a CommitRequest,
    pub batches: &'a [CommitBatch],
    pub chunk: Option<u32>,
    /// The span of the commit's caller when another commit runs it (group commit): the store
    /// write that carries its item is linked to it, so its trace leads to the write.
    pub caller: Option<tracing::span::Id>,
}

impl<'a> LogCommit<'a> {
    /// All of `request` as one item.
    pub(super) fn whole(request: &'a CommitRequest) -> Self {
        LogCommit {
            request,
            batches: &request.batches,
            chunk: None,
            caller: None,
        }
    }

    /// The name its item is remembered by, which answers a retry.
    fn record_name(&self) -> String {
        match self.chunk {
            Some(chunk) => format!("{}~{chunk:04}", self.request.segment_key),
            None => self.request.segment_key.clone(),
        }
    }
}

type LogAnswer = Result<Vec<BatchOutcome>, SequencerError>;

/// How a round of [`Indexer::append_all`] ended.
enum Round {
    /// Its commits are answered (appended, recalled, refused or failed).
    Done,
    /// Its request found the first sequence number taken; nothing of it landed.
    Conflict,
}

/// What a round does with the next commit.
enum Step {
    Answer(LogAnswer),
    Plan(ShardLogItem, Vec<BatchOutcome>),
    /// End the request here; the commit goes into the next one.
    Stop,
}

/// One planned item of a pending request.
struct Planned {
    /// Its commit's position in the group.
    commit: usize,
    item: Arc<ShardLogItem>,
    outcomes: Vec<BatchOutcome>,
}

/// The items of the next store request, at consecutive sequence numbers from `first_seq`, and
/// what they changed in the cache.
struct Pending {
    shard: u32,
    first_seq: u64,
    short_items: bool,
    max_items: usize,
    bytes: usize,
    ops: Vec<WriteOp>,
    planned: Vec<Planned>,
    undo: Undo,
}

impl Pending {
    fn new(shard: u32, first_seq: u64, short_items: bool, max_items: usize) -> Self {
        Pending {
            shard,
            first_seq,
            short_items,
            max_items,
            bytes: 0,
            ops: Vec::new(),
            planned: Vec::new(),
            undo: Undo::default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.planned.is_empty()
    }

    fn is_full(&self) -> bool {
        self.planned.len() >= self.max_items
    }

    /// Whether an item of this request has the record name `name`.
    fn names(&self, name: &str) -> bool {
        self.planned.iter().any(|p| p.item.record_name() == name)
    }

    /// Adds `item` (of the group's commit `commit`) at the next sequence number and applies it
    /// to the cache, so the next commit is planned after it; `false` (nothing added) if it
    /// would take a request that holds items already past [`MAX_TRANSACTION_BYTES`].
    fn push(
        &mut self,
        state: &mut ShardState,
        commit: usize,
        item: ShardLogItem,
        outcomes: Vec<BatchOutcome>,
    ) -> bool {
        let seq = self.first_seq + self.ops.len() as u64;
        let key = shard_log_key(self.shard, seq);
        let value = match self.short_items {
            true => item.encode_short(),
            false => catalog::encode(&item),
        };
        let bytes = dynamodb::item_size(&key, value.len());
        if !self.is_empty() && self.bytes + bytes > MAX_TRANSACTION_BYTES {
            return false;
        }
        self.bytes += bytes;
        if self.is_empty() {
            mark_unwritten(state);
        }
        self.undo.save(state, &item);
        apply_item(state, &item);
        self.ops.push(WriteOp::Put {
            key,
            value,
            condition: Condition::Absent,
        });
        self.planned.push(Planned {
            commit,
            item: Arc::new(item),
            outcomes,
        });
        true
    }
}

/// The cached rows and producer states that pending items changed, as they were before: put
/// back when the request does not land, so the cache matches the log again.
#[derive(Default)]
struct Undo {
    parts: HashMap<PartitionId, Option<PartitionState>>,
    producers: HashMap<ProducerKey, Option<StoredProducer>>,
}

impl Undo {
    /// Keeps what `item` is about to change, unless an earlier item changed it already.
    fn save(&mut self, state: &ShardState, item: &ShardLogItem) {
        for (entry, topic_id) in entries_with_topic(item) {
            let id = (topic_id, entry.partition);
            self.parts
                .entry(id)
                .or_insert_with(|| state.partitions.get(&id).copied());
        }
        for (delta, topic_id) in producers_with_topic(item) {
            let key = (topic_id, delta.partition, delta.producer_id);
            self.producers
                .entry(key)
                .or_insert_with(|| state.producers.get(&key).cloned());
        }
    }

    /// Puts the cache back as it was before the first pending item. The log stays marked
    /// behind: another writer appended, or the request may have landed unanswered.
    fn restore(self, state: &mut ShardState) {
        state.unsettled = false;
        for (id, before) in self.parts {
            match before {
                Some(part) => state.partitions.insert(id, part),
                None => state.partitions.remove(&id),
            };
        }
        for (key, before) in self.producers {
            match before {
                Some(producer) => state.producers.insert(key, producer),
                None => state.producers.remove(&key),
            };
        }
    }
}

/// An item's index entries with their topics.
fn entries_with_topic(item: &ShardLogItem) -> impl Iterator<Item = (&LogEntry, uuid::Uuid)> {
    item.entries
        .iter()
        .filter_map(|e| Some((e, item.topic_id(e.topic)?)))
}

/// An item's producer batches with their topics.
fn producers_with_topic(item: &ShardLogItem) -> impl Iterator<Item = (&ProducerDelta, uuid::Uuid)> {
    item.producers
        .iter()
        .filter_map(|d| Some((d, item.topic_id(d.topic)?)))
}

/// Moves the cached rows and producer states by `item`'s entries and producer batches (those
/// not cached are replayed when they are loaded).
fn apply_item(state: &mut ShardState, item: &ShardLogItem) {
    for (entry, topic_id) in entries_with_topic(item) {
        if let Some(part) = state.partitions.get_mut(&(topic_id, entry.partition)) {
            entry.apply_to(&mut part.record);
        }
    }
    for (delta, topic_id) in producers_with_topic(item) {
        let key = (topic_id, delta.partition, delta.producer_id);
        replay_producer(state.producers.get_mut(&key), delta, item.committed_at_ms);
    }
}

/// Marks the cache as holding items that are not in the store yet, before the first is
/// applied. Until the request's answer is in, the log is behind (no fold) and, should the
/// commit that runs the group go away in between, the cache is unsettled: the next user of the
/// shard forgets it and reads rows and log again ([`ShardState::settle`]).
fn mark_unwritten(state: &mut ShardState) {
    state.unsettled = true;
    if let Some(log) = state.log.as_mut() {
        log.behind = true;
    }
}

/// Adds an item that is in the store to the log as held: its answer is remembered, and it is
/// the last item known (to be folded).
fn hold_item(state: &mut ShardState, seq: u64, item: Arc<ShardLogItem>, horizon: i64) {
    if let Some(log) = state.log.as_mut() {
        log.remember(&item, &item.record_name(), horizon);
        log.unfolded.push_back((seq, item));
        log.last_seq = seq;
    }
}

fn store_error(e: CatalogError) -> SequencerError {
    SequencerError::StoreUnavailable(e.to_string())
}

/// A commit the group left unanswered (cannot happen: every round answers what it takes).
fn unanswered() -> SequencerError {
    SequencerError::StoreUnavailable("commit left unanswered; retry".into())
}

/// Replays a producer batch onto a cached state (nothing cached: nothing to do, the state is
/// replayed when it is loaded).
fn replay_producer(
    cached: Option<&mut Option<(ProducerRecord, u64)>>,
    delta: &ProducerDelta,
    at_ms: i64,
) {
    let Some(cached) = cached else {
        return;
    };
    match cached {
        Some((record, _)) => {
            if let Some(next) = delta.apply_to(Some(record), at_ms) {
                *record = next;
            }
        }
        None => {
            *cached = delta.apply_to(None, at_ms).map(|record| (record, 0));
        }
    }
}

fn log_gap(shard: u32, expected: u64, found: u64) -> CatalogError {
    CatalogError::Store(MetaStoreError::Corrupt {
        key: shard_log_key(shard, found),
        reason: format!(
            "shard log jumps from {} to {found}",
            expected.saturating_sub(1)
        ),
    })
}
