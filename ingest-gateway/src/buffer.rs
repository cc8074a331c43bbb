//! The shared produce buffer and its flusher.
//!
//! Every accepted batch is appended to the current [`SegmentBuilder`] together with a waiter
//! for its produce partition. The flusher seals the buffer when it holds `flush_bytes`; when
//! it holds anything and no upload is in flight, once `flush_min_interval` has passed since
//! the previous seal (adaptive flushing: with no minimum, a request on an idle gateway is
//! flushed at once, and what arrives during an upload waits for that upload only, grouped
//! into one segment); and in any case once `flush_interval` has passed since the previous seal
//! (the most a batch waits). On an object store every flush is a PUT and a metadata write, so
//! there the minimum defaults to the interval and a trickle of traffic costs at most one flush
//! per interval (docs/cost.md). It uploads the segment (several uploads may run at once under
//! load), and commits finished uploads once per indexer shard they touch, each shard's
//! commits strictly in seal order — so the batches of one partition (and one idempotent
//! producer) are sequenced in the order they were accepted — while shards never wait for each
//! other ([`ShardLanes`]). Each waiter then gets the outcomes of its batches.
//!
//! Memory is bounded: a produce request first takes permits worth its bytes from a semaphore of
//! `max_buffered_bytes`; they are returned when its segment is done. The bytes held
//! (`kafscale_produce_buffer_bytes`) are read from that semaphore at scrape time; flushes,
//! segment sizes, upload and commit latencies and hedged uploads are counted once per segment.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kafscale_shared::batch::ValidatedBatch;
use kafscale_shared::buffer_pool::BufferPool;
use kafscale_shared::catalog::now_ms;
use kafscale_shared::keys::new_segment_key;
use kafscale_shared::metrics::{self as names, ScrapeSource, TextWriter};
use kafscale_shared::object_store::{ObjectStore, ObjectStoreError};
use kafscale_shared::segment::{BatchMeta, SegmentBuilder};
use kafscale_shared::sequencer::{BatchOutcome, CommitBatch, CommitRequest, Sequencer};
use kafscale_shared::shards::shard_of;
use kafscale_shared::trace_context;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info_span, warn};
use uuid::Uuid;

use crate::config::IngestConfig;
use crate::error::IngestError;

/// Outcomes of one produce partition's batches, in order, or the flush error.
pub type FlushOutcome = Result<Vec<BatchOutcome>, IngestError>;

struct Waiter {
    first: usize,
    count: usize,
    tx: oneshot::Sender<FlushOutcome>,
}

struct Open {
    builder: SegmentBuilder,
    batches: Vec<CommitBatch>,
    waiters: Vec<Waiter>,
    permits: Vec<OwnedSemaphorePermit>,
    opened_at: Option<Instant>,
    /// The segment's trace span: a child of the produce request that opened the segment,
    /// linked to (some of) the others; the upload and the commits are its children.
    span: Span,
    /// Links added to `span` so far (bounded by [`MAX_SEGMENT_LINKS`]).
    links: usize,
    /// Set once the flusher has stopped: later appends are refused instead of never answered.
    closed: bool,
    /// When the previous segment was sealed (`None`: never).
    previous_seal: Option<Instant>,
}

impl Open {
    fn new(previous_seal: Option<Instant>) -> Self {
        Open {
            previous_seal,
            builder: SegmentBuilder::new(),
            batches: Vec::new(),
            waiters: Vec::new(),
            permits: Vec::new(),
            opened_at: None,
            span: Span::none(),
            links: 0,
            closed: false,
        }
    }
}

/// A sealed buffer on its way to the object store and the sequencer.
struct Sealed {
    key: String,
    data: Bytes,
    batches: Vec<CommitBatch>,
    waiters: Vec<Waiter>,
    _permits: Vec<OwnedSemaphorePermit>,
    span: Span,
}

/// Most produce requests a segment's span links to besides the one that opened it (a busy
/// segment holds thousands; a trace viewer needs a sample, not all).
const MAX_SEGMENT_LINKS: usize = 32;

/// Idle segment buffers kept for reuse: one per upload that may run at once, plus the one being
/// filled. In steady state a buffer comes back (an upload finished, or the block cache let go
/// of a segment) about as often as a flush needs one; more idle buffers would only be memory
/// outside every budget (docs/operations.md, "Memory bounds").
fn segment_buffers_idle(config: &IngestConfig) -> usize {
    config.max_concurrent_uploads.max(1) + 1
}

/// One produce partition's batches on their way into the open segment, with what answers them
/// (`tx`) and the budget they hold (`permit`, returned when their segment is done).
struct Joining<'a> {
    topic_id: Uuid,
    partition: i32,
    batches: &'a [ValidatedBatch],
    tx: oneshot::Sender<FlushOutcome>,
    permit: OwnedSemaphorePermit,
}

/// The produce buffer shared by every connection of an ingest gateway.
pub struct SegmentBuffer {
    open: Mutex<Open>,
    wake: Notify,
    /// Notified whenever the open segment is sealed (appends waiting for room).
    sealed: Notify,
    budget: Arc<Semaphore>,
    config: IngestConfig,
    /// Memory of sealed segments, reused once nothing refers to a segment any more.
    segment_buffers: Arc<BufferPool>,
}

impl std::fmt::Debug for SegmentBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentBuffer")
            .field("config", &self.config)
            .finish()
    }
}

impl SegmentBuffer {
    pub fn new(config: IngestConfig) -> Arc<Self> {
        let budget = Arc::new(Semaphore::new(
            config.max_buffered_bytes.min(Semaphore::MAX_PERMITS),
        ));
        let buffer = Arc::new(SegmentBuffer {
            open: Mutex::new(Open::new(None)),
            wake: Notify::new(),
            sealed: Notify::new(),
            budget,
            segment_buffers: BufferPool::new(segment_buffers_idle(&config)),
            config,
        });
        names::add_source(Arc::new(BufferGauge(Arc::downgrade(&buffer))));
        // Registered at zero now, so the series exist before the first flush.
        metrics::counter!(names::SEGMENT_FLUSHES).increment(0);
        metrics::counter!(names::SEGMENT_UPLOADS_HEDGED).increment(0);
        for name in [
            names::SEGMENT_SIZE,
            names::SEGMENT_UPLOAD_DURATION,
            names::SEGMENT_COMMIT_DURATION,
        ] {
            let _registered = metrics::histogram!(name);
        }
        buffer
    }

    /// Bytes of produce requests in the buffer or in segments not yet answered.
    pub fn bytes_in_use(&self) -> usize {
        let total = self.config.max_buffered_bytes.min(Semaphore::MAX_PERMITS);
        if self.budget.is_closed() {
            return 0;
        }
        total.saturating_sub(self.budget.available_permits())
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// Waits for buffer space for `bytes` and for room in the open segment (backpressure),
    /// then appends the batches of one produce partition; the receiver yields their outcomes
    /// after the flush. `origin` is the produce request's span, which the segment's span
    /// continues or links to.
    pub async fn append(
        &self,
        topic_id: Uuid,
        partition: i32,
        batches: Vec<ValidatedBatch>,
        origin: &Span,
    ) -> Result<oneshot::Receiver<FlushOutcome>, IngestError> {
        let bytes: usize = batches.iter().map(|b| b.bytes.len()).sum();
        let want = bytes.clamp(1, self.config.max_buffered_bytes) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        let (tx, rx) = oneshot::channel();
        let joining = Joining {
            topic_id,
            partition,
            batches: &batches,
            tx,
            permit,
        };
        let full = loop {
            let sealed = {
                let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                if open.closed {
                    return Err(IngestError::ShuttingDown);
                }
                if self.has_room(&open) {
                    break self.append_to(&mut open, joining, origin);
                }
                // Created under the lock that `seal` notifies under, so the next seal wakes
                // it even before it is first polled (tokio's `notify_waiters` guarantee).
                self.sealed.notified()
            };
            // The open segment is full and every upload slot is taken: wait for the flusher
            // to seal it rather than grow it (and the copy made when it is sealed) towards the
            // whole byte budget.
            self.wake.notify_one();
            sealed.await;
        };
        if full {
            self.wake.notify_one();
        }
        Ok(rx)
    }

    /// Whether a request may join the open segment: it is empty, or below the flush size.
    /// So a segment holds at most `flush_bytes` plus one produce partition's batches.
    fn has_room(&self, open: &Open) -> bool {
        open.opened_at.is_none() || open.builder.data_bytes() < self.config.flush_bytes
    }

    /// Appends to the open segment; true if the flusher should look at it now.
    fn append_to(&self, open: &mut Open, joining: Joining<'_>, origin: &Span) -> bool {
        let Joining {
            topic_id,
            partition,
            batches,
            tx,
            permit,
        } = joining;
        let first = open.batches.len();
        for b in batches {
            let h = &b.header;
            let len = b.bytes.len() as u64;
            open.builder.append(
                topic_id,
                partition,
                b.bytes.clone(),
                BatchMeta {
                    record_count: h.record_count.max(0) as u32,
                    first_timestamp: h.base_timestamp,
                    max_timestamp: h.max_timestamp,
                },
            );
            open.batches.push(CommitBatch {
                topic_id,
                partition,
                byte_start: 0,
                byte_len: len,
                offset_count: h.offset_count(),
                record_count: h.record_count.max(0) as u32,
                first_timestamp: h.base_timestamp,
                max_timestamp: h.max_timestamp,
                producer_id: h.producer_id,
                producer_epoch: h.producer_epoch,
                base_sequence: h.base_sequence,
            });
        }
        open.waiters.push(Waiter {
            first,
            count: batches.len(),
            tx,
        });
        open.permits.push(permit);
        let was_empty = open.opened_at.is_none();
        if was_empty {
            open.opened_at = Some(Instant::now());
            open.span = info_span!(parent: origin, "segment");
        } else if open.links < MAX_SEGMENT_LINKS {
            open.links += 1;
            trace_context::link(&open.span, origin);
        }
        was_empty || open.builder.data_bytes() >= self.config.flush_bytes
    }

    /// Seals the open buffer if it is due (or `force`); `idle`: no upload is in flight. When
    /// forced and empty, closes the buffer for good, atomically with the check, so no append
    /// can slip in unanswered.
    fn seal(&self, force: bool, idle: bool) -> Option<Sealed> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let Some(due_at) = self.due_at(&open, idle) else {
            if force {
                open.closed = true;
            }
            return None;
        };
        let now = Instant::now();
        let due = force || open.builder.data_bytes() >= self.config.flush_bytes || due_at <= now;
        if !due {
            return None;
        }
        let open = std::mem::replace(&mut *open, Open::new(Some(now)));
        self.sealed.notify_waiters();
        let built = open.builder.finish_in(&self.segment_buffers);
        metrics::counter!(names::SEGMENT_FLUSHES).increment(1);
        metrics::histogram!(names::SEGMENT_SIZE).record(built.data.len() as f64);
        let mut batches = open.batches;
        for (b, start) in batches.iter_mut().zip(built.batch_starts.iter()) {
            b.byte_start = *start;
        }
        Some(Sealed {
            key: new_segment_key(now_ms()),
            data: built.data,
            batches,
            waiters: open.waiters,
            _permits: open.permits,
            span: open.span,
        })
    }

    /// When the open segment is due on the timer (`None`: it is empty): the minimum interval
    /// after the previous seal if nothing is uploading (`idle`), the full interval otherwise;
    /// at once if that has passed.
    fn due_at(&self, open: &Open, idle: bool) -> Option<Instant> {
        let opened_at = open.opened_at?;
        let wait = match idle {
            true => self
                .config
                .flush_min_interval
                .min(self.config.flush_interval),
            false => self.config.flush_interval,
        };
        Some(match open.previous_seal {
            Some(sealed) => opened_at.max(sealed + wait),
            None => opened_at,
        })
    }

    fn deadline(&self, idle: bool) -> Option<Instant> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        self.due_at(&open, idle)
    }

    /// Runs the flusher until `shutdown` fires; then flushes what is buffered and returns
    /// once every buffered produce request has its answer.
    pub async fn run_flusher(
        self: Arc<Self>,
        store: Arc<dyn ObjectStore>,
        sequencer: Arc<dyn Sequencer>,
        shutdown: CancellationToken,
    ) {
        let mut uploads = FuturesOrdered::new();
        let mut stopping = false;
        let max_uploads = self.config.max_concurrent_uploads.max(1);
        // Commits run in seal order on their own task, so the next segments are sealed and
        // uploaded while earlier ones are being sequenced. The channel is bounded: when commits
        // fall behind, uploads wait, and the byte budget makes producers wait.
        let (to_commit, mut committing) =
            tokio::sync::mpsc::channel::<(Sealed, UploadResult)>(max_uploads);
        let committer = {
            let mut lanes = ShardLanes::new(sequencer, self.config.commit_attempts);
            let shard_count = self.config.shard_count;
            tokio::spawn(async move {
                while let Some((sealed, result)) = committing.recv().await {
                    lanes.dispatch(sealed, result, shard_count);
                }
                lanes.close().await;
            })
        };
        loop {
            if uploads.len() < max_uploads
                && let Some(sealed) = self.seal(stopping, uploads.is_empty())
            {
                uploads.push_back(upload(
                    store.clone(),
                    sealed,
                    self.config.upload_hedge_after,
                ));
                continue;
            }
            if stopping && uploads.is_empty() {
                break;
            }
            let deadline = if uploads.len() < max_uploads {
                self.deadline(uploads.is_empty())
            } else {
                None
            };
            tokio::select! {
                Some((sealed, result)) = uploads.next(), if !uploads.is_empty() => {
                    if let Err(lost) = to_commit.send((sealed, result)).await {
                        // The committer is gone (it panicked): answer with an error, never hang.
                        let (sealed, _) = lost.0;
                        warn!(segment = %sealed.key, "segment committer stopped; failing its produce requests");
                        fail(sealed, IngestError::Commit("segment committer stopped".into()));
                    }
                }
                _ = self.wake.notified(), if !stopping => {}
                _ = sleep_until_opt(deadline), if deadline.is_some() && !stopping => {}
                _ = shutdown.cancelled(), if !stopping => stopping = true,
            }
        }
        drop(to_commit);
        let _ = committer.await;
        self.budget.close();
    }
}

/// `kafscale_produce_buffer_bytes`, read at scrape time.
struct BufferGauge(Weak<SegmentBuffer>);

#[async_trait::async_trait]
impl ScrapeSource for BufferGauge {
    async fn collect(&self, out: &mut TextWriter) {
        if let Some(buffer) = self.0.upgrade() {
            out.sample(
                names::PRODUCE_BUFFER_BYTES,
                &[],
                buffer.bytes_in_use() as f64,
            );
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

type UploadResult = Result<(), IngestError>;

/// Puts `data` under `key`; if that takes longer than `hedge_after`, also under a second, new
/// key, and keeps whichever upload finishes first (returning its key). Segments are committed
/// in order, so one slow PUT holds back every segment behind it: object-store latency has a
/// long tail (S3 Standard: p50 ~30 ms, p99 ~150 ms), and a second request rarely hits it
/// again. The losing object, if it is written at all, is deleted.
async fn put_hedged(
    store: Arc<dyn ObjectStore>,
    key: String,
    data: Bytes,
    hedge_after: Option<Duration>,
) -> (String, Result<(), ObjectStoreError>) {
    let put = |key: String| {
        let (store, data) = (store.clone(), data.clone());
        Box::pin(async move {
            let result = store.put(&key, data).await;
            (key, result)
        })
    };
    let mut first = put(key);
    let Some(after) = hedge_after else {
        return first.await;
    };
    tokio::select! {
        done = &mut first => return done,
        () = tokio::time::sleep(after) => {}
    }
    let mut second = put(new_segment_key(now_ms()));
    metrics::counter!(names::SEGMENT_UPLOADS_HEDGED).increment(1);
    debug!(
        after_ms = after.as_millis() as u64,
        "segment upload slow; hedging"
    );
    let (winner, loser) = tokio::select! {
        done = &mut first => (done, second),
        done = &mut second => (done, first),
    };
    match winner {
        (key, Ok(())) => {
            tokio::spawn(async move {
                if let (loser_key, Ok(())) = loser.await
                    && let Err(e) = store.delete(&loser_key).await
                {
                    warn!(key = %loser_key, error = %e, "could not delete the losing hedged upload");
                }
            });
            (key, Ok(()))
        }
        // The one that finished failed: the other decides.
        (_, Err(_)) => loser.await,
    }
}

fn upload(
    store: Arc<dyn ObjectStore>,
    mut sealed: Sealed,
    hedge_after: Option<Duration>,
) -> impl std::future::Future<Output = (Sealed, UploadResult)> {
    let span = info_span!(parent: &sealed.span, "segment_upload", key = %sealed.key, bytes = sealed.data.len());
    async move {
        let started = std::time::Instant::now();
        let (key, result) =
            put_hedged(store, sealed.key.clone(), sealed.data.clone(), hedge_after).await;
        sealed.key = key;
        metrics::histogram!(names::SEGMENT_UPLOAD_DURATION).record(started.elapsed().as_secs_f64());
        let result = result.map_err(|e| {
            warn!(error = %e, "segment upload failed");
            IngestError::from_upload(&e)
        });
        debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "segment uploaded"
        );
        (sealed, result)
    }
    .instrument(span)
}

/// Commits one shard's part of a segment, retrying retriable failures with backoff (commits
/// are idempotent per segment and shard, so a retry after an unknown outcome is safe).
async fn commit_shard(
    sequencer: &dyn Sequencer,
    request: CommitRequest,
    attempts: u32,
) -> Result<Vec<BatchOutcome>, IngestError> {
    let started = std::time::Instant::now();
    let result = commit_with_retries(sequencer, request, attempts, started).await;
    metrics::histogram!(names::SEGMENT_COMMIT_DURATION).record(started.elapsed().as_secs_f64());
    result
}

async fn commit_with_retries(
    sequencer: &dyn Sequencer,
    request: CommitRequest,
    attempts: u32,
    started: std::time::Instant,
) -> Result<Vec<BatchOutcome>, IngestError> {
    let mut delay = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match sequencer.commit(request.clone()).await {
            Ok(r) if r.outcomes.len() == request.batches.len() => {
                debug!(segment = %request.segment_key, shard = request.shard, attempt, elapsed_ms = started.elapsed().as_millis() as u64, "segment committed");
                return Ok(r.outcomes);
            }
            Ok(r) => {
                warn!(segment = %request.segment_key, shard = request.shard, got = r.outcomes.len(), want = request.batches.len(), "commit answer has the wrong size");
                return Err(IngestError::Commit(
                    "sequencer answered with the wrong number of outcomes".into(),
                ));
            }
            Err(e) if e.is_retryable() && attempt < attempts => {
                warn!(segment = %request.segment_key, shard = request.shard, attempt, error = %e, "segment commit failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
                attempt += 1;
            }
            Err(e) => {
                warn!(segment = %request.segment_key, shard = request.shard, error = %e, "segment commit failed; answering with a retriable error");
                return Err(IngestError::from_commit(&e));
            }
        }
    }
}

/// Answers every produce request of a segment with `error`.
fn fail(sealed: Sealed, error: IngestError) {
    for w in sealed.waiters {
        let _ = w.tx.send(Err(error.clone()));
    }
}

/// One shard's part of an uploaded segment: its commit and the produce requests it answers.
struct ShardCommit {
    request: CommitRequest,
    /// Waiters with `first` counted within `request.batches`.
    waiters: Vec<Waiter>,
    /// The segment's byte budget, given back once every shard of it is done.
    _permits: Arc<Vec<OwnedSemaphorePermit>>,
    span: Span,
}

/// One commit queue per indexer shard. A segment is committed once per shard it touches;
/// each shard's commits run in seal order (so one partition's batches, and one idempotent
/// producer's, are sequenced in the order they were accepted), but shards do not wait for
/// each other: a shard whose owner is gone holds back only its own partitions (until the byte
/// budget its waiting segments hold runs out).
struct ShardLanes {
    sequencer: Arc<dyn Sequencer>,
    attempts: u32,
    lanes: BTreeMap<u32, tokio::sync::mpsc::UnboundedSender<ShardCommit>>,
    tasks: tokio::task::JoinSet<()>,
}

impl ShardLanes {
    fn new(sequencer: Arc<dyn Sequencer>, attempts: u32) -> Self {
        ShardLanes {
            sequencer,
            attempts,
            lanes: BTreeMap::new(),
            tasks: tokio::task::JoinSet::new(),
        }
    }

    /// Hands an uploaded segment's shard commits to their lanes (or fails its requests).
    fn dispatch(&mut self, sealed: Sealed, uploaded: UploadResult, shard_count: u32) {
        if let Err(e) = uploaded {
            debug!(segment = %sealed.key, "segment upload failed; answering its requests");
            return fail(sealed, e);
        }
        for part in split_by_shard(sealed, shard_count) {
            let lane = self.lanes.entry(part.request.shard).or_insert_with(|| {
                spawn_lane(&mut self.tasks, self.sequencer.clone(), self.attempts)
            });
            if let Err(lost) = lane.send(part) {
                answer(
                    lost.0.waiters,
                    &Err(IngestError::Commit("commit lane stopped".into())),
                );
            }
        }
    }

    /// Lets every queued commit finish.
    async fn close(mut self) {
        self.lanes.clear();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts a shard's commit lane: its commits one at a time, in the order they are queued.
fn spawn_lane(
    tasks: &mut tokio::task::JoinSet<()>,
    sequencer: Arc<dyn Sequencer>,
    attempts: u32,
) -> tokio::sync::mpsc::UnboundedSender<ShardCommit> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ShardCommit>();
    tasks.spawn(async move {
        while let Some(part) = rx.recv().await {
            let shard = part.request.shard;
            let span = info_span!(parent: &part.span, "segment_commit", shard);
            let outcome = commit_shard(&*sequencer, part.request, attempts)
                .instrument(span)
                .await;
            answer(part.waiters, &outcome);
        }
    });
    tx
}

/// A segment's commits, one per shard it touches, each with the waiters it answers.
fn split_by_shard(sealed: Sealed, shard_count: u32) -> Vec<ShardCommit> {
    let Sealed {
        key,
        data,
        batches,
        waiters,
        _permits,
        span,
    } = sealed;
    let permits = Arc::new(_permits);
    let mut parts: BTreeMap<u32, ShardCommit> = BTreeMap::new();
    // Where each batch lands within its shard's request.
    let mut position = Vec::with_capacity(batches.len());
    for b in batches {
        let shard = shard_of(b.topic_id, b.partition, shard_count);
        let part = parts.entry(shard).or_insert_with(|| ShardCommit {
            request: CommitRequest {
                segment_key: key.clone(),
                shard,
                segment_size: data.len() as u64,
                batches: Vec::new(),
            },
            waiters: Vec::new(),
            _permits: permits.clone(),
            span: span.clone(),
        });
        position.push((shard, part.request.batches.len()));
        part.request.batches.push(b);
    }
    // A waiter's batches are one partition's, so one shard's, and consecutive there too.
    for w in waiters {
        let Some(&(shard, first)) = position.get(w.first) else {
            let _ = w.tx.send(Err(IngestError::Commit(
                "batch missing from the segment".into(),
            )));
            continue;
        };
        if let Some(part) = parts.get_mut(&shard) {
            part.waiters.push(Waiter { first, ..w });
        }
    }
    parts.into_values().collect()
}

/// Answers each waiter with its batches' outcomes from one shard's commit.
fn answer(waiters: Vec<Waiter>, outcome: &Result<Vec<BatchOutcome>, IngestError>) {
    for w in waiters {
        let result = match outcome {
            Ok(outcomes) => outcomes
                .get(w.first..w.first + w.count)
                .map(<[BatchOutcome]>::to_vec)
                .ok_or_else(|| IngestError::Commit("batch missing from the commit".into())),
            Err(e) => Err(e.clone()),
        };
        let _ = w.tx.send(result);
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use kafscale_shared::object_store::{MemoryObjectStore, ObjectMeta};

    use super::*;

    /// A store whose first `put` takes `first_put` and, if `gate` is set, every `put` waits
    /// for a permit of it.
    #[derive(Debug)]
    struct SlowPuts {
        inner: MemoryObjectStore,
        puts: AtomicUsize,
        puts_done: AtomicUsize,
        first_put: Duration,
        gate: Option<tokio::sync::Semaphore>,
    }

    #[async_trait]
    impl ObjectStore for SlowPuts {
        async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
            if self.puts.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(self.first_put).await;
            }
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("gate open").forget();
            }
            let result = self.inner.put(key, data).await;
            self.puts_done.fetch_add(1, Ordering::SeqCst);
            result
        }
        async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &str, r: Range<u64>) -> Result<Bytes, ObjectStoreError> {
            self.inner.get_range(key, r).await
        }
        async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
            self.inner.delete(key).await
        }
    }

    fn slow_store(first_put: Duration) -> Arc<SlowPuts> {
        Arc::new(SlowPuts {
            inner: MemoryObjectStore::new(),
            puts: AtomicUsize::new(0),
            puts_done: AtomicUsize::new(0),
            first_put,
            gate: None,
        })
    }

    /// Every `put` waits for a permit of the store's gate (none at first).
    fn gated_store() -> Arc<SlowPuts> {
        Arc::new(SlowPuts {
            gate: Some(tokio::sync::Semaphore::new(0)),
            ..Arc::into_inner(slow_store(Duration::ZERO)).expect("unshared")
        })
    }

    /// A buffer with `config` flushing into a [`gated_store`], committed by a sequencer that
    /// answers at once.
    fn gated(
        config: IngestConfig,
    ) -> (
        Arc<SegmentBuffer>,
        Arc<SlowPuts>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        flushing(config, gated_store())
    }

    /// A buffer with `config` flushing into `store`, committed by a sequencer that answers at
    /// once.
    fn flushing<S: ObjectStore + 'static>(
        config: IngestConfig,
        store: Arc<S>,
    ) -> (
        Arc<SegmentBuffer>,
        Arc<S>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let buffer = SegmentBuffer::new(config);
        let shutdown = CancellationToken::new();
        let flusher = tokio::spawn(buffer.clone().run_flusher(
            store.clone(),
            Arc::new(OneShardStuck::none()),
            shutdown.clone(),
        ));
        (buffer, store, shutdown, flusher)
    }

    #[tokio::test]
    async fn a_slow_upload_is_overtaken_by_its_hedge_and_the_loser_is_deleted() {
        let store = slow_store(Duration::from_millis(1500));
        let data = Bytes::from_static(b"segment");
        let (key, result) = put_hedged(
            store.clone(),
            "segments/first".into(),
            data.clone(),
            Some(Duration::from_millis(100)),
        )
        .await;
        result.unwrap();
        assert_ne!(key, "segments/first", "the hedge won");
        assert_eq!(store.get(&key).await.unwrap(), data);
        // The first upload finishes later and is then deleted.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let keys: Vec<String> = store
                .list("")
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.key)
                .collect();
            // Both uploads wrote their object, and only the winner's is left.
            if store.puts_done.load(Ordering::SeqCst) == 2 && keys == vec![key.clone()] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the losing upload was not deleted: {keys:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_fast_upload_is_not_hedged_and_hedging_can_be_off() {
        let store = slow_store(Duration::from_millis(1));
        let (key, result) = put_hedged(
            store.clone(),
            "segments/a".into(),
            Bytes::from_static(b"x"),
            Some(Duration::from_secs(10)),
        )
        .await;
        result.unwrap();
        assert_eq!(key, "segments/a");
        let store = slow_store(Duration::from_millis(200));
        let (key, result) = put_hedged(
            store.clone(),
            "segments/b".into(),
            Bytes::from_static(b"y"),
            None,
        )
        .await;
        result.unwrap();
        assert_eq!(key, "segments/b");
        assert_eq!(
            store.puts.load(Ordering::SeqCst),
            1,
            "one put each, no hedge"
        );
    }

    /// Commits of shard `stuck` wait until `release` is notified; other shards' commit at once.
    struct OneShardStuck {
        stuck: u32,
        release: tokio::sync::Semaphore,
        started: AtomicUsize,
        next_offset: Mutex<BTreeMap<(Uuid, i32), i64>>,
    }

    impl OneShardStuck {
        /// A sequencer with no stuck shard: every commit succeeds at once.
        fn none() -> Self {
            OneShardStuck {
                stuck: u32::MAX,
                release: tokio::sync::Semaphore::new(0),
                started: AtomicUsize::new(0),
                next_offset: Mutex::new(BTreeMap::new()),
            }
        }
    }

    #[async_trait]
    impl Sequencer for OneShardStuck {
        async fn commit(
            &self,
            request: CommitRequest,
        ) -> Result<
            kafscale_shared::sequencer::CommitResponse,
            kafscale_shared::sequencer::SequencerError,
        > {
            self.started.fetch_add(1, Ordering::SeqCst);
            if request.shard == self.stuck {
                let _ = self.release.acquire().await;
            }
            let mut next = self.next_offset.lock().unwrap();
            let outcomes = request
                .batches
                .iter()
                .map(|b| {
                    let at = next.entry((b.topic_id, b.partition)).or_default();
                    let base_offset = *at;
                    *at += i64::from(b.offset_count);
                    BatchOutcome::Appended {
                        base_offset,
                        log_start_offset: 0,
                    }
                })
                .collect();
            Ok(kafscale_shared::sequencer::CommitResponse { outcomes })
        }

        async fn delete_records(
            &self,
            _: kafscale_shared::sequencer::DeleteRecordsRequest,
        ) -> Result<
            kafscale_shared::sequencer::DeleteRecordsResponse,
            kafscale_shared::sequencer::SequencerError,
        > {
            unreachable!("not asked")
        }
    }

    /// One produce partition's batches: one record with `value`.
    fn one_record_batch(value: &[u8]) -> Vec<ValidatedBatch> {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let record = Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: 0,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
            delete_horizon: false,
        };
        let mut bytes = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut bytes, &[record], &options).unwrap();
        let batch = kafscale_shared::batch::validate_produce_batch(&bytes.freeze(), usize::MAX);
        vec![batch.unwrap()]
    }

    /// The flood test's finding: with every upload slot taken, the open segment grew towards
    /// the whole byte budget, and sealing it copied all of it once more. A full open segment
    /// now makes further appends wait for the next seal.
    #[tokio::test]
    async fn a_full_segment_waits_for_an_upload_slot_instead_of_growing() {
        let one = one_record_batch(&[7u8; 1000]);
        let batch_bytes = one[0].bytes.len();
        let (buffer, store, shutdown, flusher) = gated(IngestConfig {
            flush_bytes: 2 * batch_bytes,
            flush_interval: Duration::from_secs(3600),
            max_concurrent_uploads: 1,
            max_buffered_bytes: 1 << 20,
            ..IngestConfig::default()
        });
        let topic = Uuid::new_v4();
        let append = |buffer: Arc<SegmentBuffer>| async move {
            buffer
                .append(topic, 0, one_record_batch(&[7u8; 1000]), &Span::none())
                .await
        };
        // The first batch after a quiet spell is sealed at once; its upload takes the only
        // slot.
        let mut answers = vec![append(buffer.clone()).await.unwrap()];
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.puts.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "the full segment was never sealed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Two more fill the next segment, which cannot be sealed while the upload runs.
        answers.push(append(buffer.clone()).await.unwrap());
        answers.push(append(buffer.clone()).await.unwrap());
        let waiting = tokio::spawn(append(buffer.clone()));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiting.is_finished(),
            "a fourth batch joined a full segment"
        );
        assert_eq!(
            buffer.open.lock().unwrap().builder.data_bytes(),
            2 * batch_bytes
        );
        // Uploads finish: the waiting batch goes into the next segment and everyone is answered.
        store
            .gate
            .as_ref()
            .expect("gated")
            .add_permits(usize::MAX >> 4);
        answers.push(waiting.await.unwrap().unwrap());
        shutdown.cancel();
        for answer in answers {
            assert!(answer.await.expect("answered").is_ok());
        }
        flusher.await.unwrap();
    }

    /// On an idle gateway (the adaptive policy, no minimum interval) a batch is flushed at
    /// once; what arrives while its upload runs waits for that upload only, not for the flush
    /// interval (an hour here), and goes into one segment.
    #[tokio::test]
    async fn adaptive_flushing_seals_at_once_when_idle_and_groups_what_arrives_during_an_upload() {
        let (buffer, store, shutdown, flusher) = gated(IngestConfig {
            flush_interval: Duration::from_secs(3600),
            flush_min_interval: Duration::ZERO,
            ..IngestConfig::default()
        });
        let topic = Uuid::new_v4();
        let first = buffer
            .append(topic, 0, one_record_batch(b"a"), &Span::none())
            .await
            .unwrap();
        let gate = store.gate.as_ref().expect("gated");
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.puts.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the first batch was not sealed");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut during = Vec::new();
        for value in [b"b", b"c"] {
            let rx = buffer
                .append(topic, 0, one_record_batch(value), &Span::none())
                .await
                .unwrap();
            during.push(rx);
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            store.puts.load(Ordering::SeqCst),
            1,
            "sealed while an upload was in flight, before the interval"
        );
        // The upload finishes: the two batches are flushed together, at once.
        gate.add_permits(usize::MAX >> 4);
        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            assert!(first.await.expect("answered").is_ok());
            for rx in during {
                assert!(rx.await.expect("answered").is_ok());
            }
        });
        answered
            .await
            .expect("the batches that arrived during the upload waited for the interval");
        assert_eq!(
            store.puts_done.load(Ordering::SeqCst),
            2,
            "one segment each"
        );
        shutdown.cancel();
        flusher.await.unwrap();
    }

    /// A buffer flushing every `flush_interval` (also its minimum: the object-store policy)
    /// into a memory store, committed by a sequencer that answers at once.
    fn running(
        flush_interval: Duration,
    ) -> (
        Arc<SegmentBuffer>,
        Arc<MemoryObjectStore>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let config = IngestConfig {
            flush_interval,
            flush_min_interval: flush_interval,
            ..IngestConfig::default()
        };
        flushing(config, Arc::new(MemoryObjectStore::new()))
    }

    /// A batch that arrives after a quiet spell does not wait for the flush interval (here an
    /// hour): it is sealed at once. The next one, right behind it, waits for the interval.
    #[tokio::test]
    async fn a_batch_after_a_quiet_spell_is_sealed_at_once_and_the_next_waits() {
        let (buffer, store, shutdown, flusher) = running(Duration::from_secs(3600));
        let topic = Uuid::new_v4();
        let first = buffer
            .append(topic, 0, one_record_batch(b"a"), &Span::none())
            .await
            .unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(10), first)
            .await
            .expect("the first batch waited for the flush interval")
            .expect("answered");
        assert!(outcome.is_ok());
        let second = buffer
            .append(topic, 0, one_record_batch(b"b"), &Span::none())
            .await
            .unwrap();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            buffer.open.lock().unwrap().builder.data_bytes() > 0,
            "the second batch was sealed before the interval"
        );
        shutdown.cancel();
        assert!(second.await.expect("answered at shutdown").is_ok());
        flusher.await.unwrap();
        assert_eq!(store.list("").await.unwrap().len(), 2);
    }

    /// A steady trickle of produce requests costs one flush per interval, not one per
    /// request, and none of them waits longer than the interval (on a paused clock).
    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_is_flushed_once_per_interval() {
        let interval = Duration::from_millis(100);
        let (buffer, store, shutdown, flusher) = running(interval);
        let topic = Uuid::new_v4();
        let mut answers = Vec::new();
        // 100 requests, one every 10 ms: a second of traffic.
        for i in 0..100u8 {
            let sent = Instant::now();
            let rx = buffer
                .append(topic, 0, one_record_batch(&[i]), &Span::none())
                .await
                .unwrap();
            answers.push(tokio::spawn(async move {
                let outcome = rx.await.expect("answered");
                (outcome.is_ok(), sent.elapsed())
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for answer in answers {
            let (ok, waited) = answer.await.unwrap();
            assert!(ok);
            assert!(waited <= interval, "a request waited {waited:?}");
        }
        let segments = store.list("").await.unwrap().len();
        // The first request is sealed at once, then one segment per 100 ms of the second.
        assert!((10..=12).contains(&segments), "{segments} segments");
        shutdown.cancel();
        flusher.await.unwrap();
    }

    /// A partition of `topic` on `shard` (of 2).
    fn partition_on(topic: Uuid, shard: u32) -> i32 {
        (0..64)
            .find(|p| shard_of(topic, *p, 2) == shard)
            .expect("a partition")
    }

    #[tokio::test]
    async fn a_shard_without_a_live_owner_does_not_hold_back_the_others() {
        let sequencer = Arc::new(OneShardStuck {
            stuck: 0,
            release: tokio::sync::Semaphore::new(0),
            started: AtomicUsize::new(0),
            next_offset: Mutex::new(BTreeMap::new()),
        });
        let buffer = SegmentBuffer::new(IngestConfig {
            shard_count: 2,
            flush_interval: Duration::from_millis(5),
            ..IngestConfig::default()
        });
        let shutdown = CancellationToken::new();
        let flusher = tokio::spawn(buffer.clone().run_flusher(
            Arc::new(MemoryObjectStore::new()),
            sequencer.clone(),
            shutdown.clone(),
        ));
        let topic = Uuid::new_v4();
        let batch = || one_record_batch(b"v");
        let (stuck, free) = (partition_on(topic, 0), partition_on(topic, 1));
        // Sealed first: a segment holding only the stuck shard's partition.
        let held = buffer
            .append(topic, stuck, batch(), &Span::none())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sequencer.started.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "the first segment was never committed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Sealed later, on the other shard: answered although the first is still stuck.
        let answered = buffer
            .append(topic, free, batch(), &Span::none())
            .await
            .unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(10), answered)
            .await
            .expect("the free shard's produce waited for the stuck shard")
            .expect("answered");
        assert_eq!(
            outcome.unwrap(),
            vec![BatchOutcome::Appended {
                base_offset: 0,
                log_start_offset: 0
            }]
        );
        sequencer.release.add_permits(1);
        assert!(held.await.expect("answered").is_ok());
        shutdown.cancel();
        flusher.await.unwrap();
    }
}
