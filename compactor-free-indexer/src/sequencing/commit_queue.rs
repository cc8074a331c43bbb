//! Group commit: the commits that wait for a shard while its lock is held go out together.
//!
//! On the shard log one commit costs one store round trip, and the shard's lock makes the
//! shard's commits wait for each other's; so the store's latency, not its capacity, bounds a
//! shard's commits per second. Here each commit joins its shard's queue and then waits for
//! whichever comes first: its answer, or the lock. Whoever gets the lock takes the whole queue
//! (its own commit and those that arrived while the lock was held, in arrival order), runs it
//! and answers each commit. Commits on the shard log go out together through
//! [`Indexer::append_all`] (one store request of several items); a lone commit is a group of
//! one and costs what it always did. Commits on the row layout (layout 1), and commits too
//! large for one log item, run one at a time in their place in the queue.
//!
//! Order: the queue keeps arrival order, and a gateway sends a shard its next commit only
//! after the answer to the previous one, so no gateway's commits are reordered.
//!
//! Cancellation: a commit whose caller went away while it waited is skipped by the taker (its
//! answer channel is closed). If the taker's own caller goes away while it runs the queue, the
//! commits it took find their answer channel closed and queue again; those whose items landed
//! are then answered from the log by segment key, as any retry.

use std::sync::Arc;

use kafscale_shared::sequencer::{CommitRequest, CommitResponse, SequencerError};
use tokio::sync::{Mutex, oneshot};
use tracing::debug;

use super::log_commit::LogCommit;
use super::{BATCHES_PER_LOG_ITEM, Indexer, Prepared, ShardState};

type CommitAnswer = Result<CommitResponse, SequencerError>;

/// The commits waiting for one shard, in arrival order. The std mutex guards only pushes and
/// takes (never held across an await).
#[derive(Default)]
pub(super) struct CommitQueue(std::sync::Mutex<Vec<Waiting>>);

/// A queued commit and where its answer goes.
struct Waiting {
    request: Arc<CommitRequest>,
    answer: oneshot::Sender<CommitAnswer>,
    /// The caller's span (its `commit`), for the store write that carries it.
    caller: tracing::Span,
}

impl Waiting {
    fn answer(self, answer: CommitAnswer) {
        // A caller that went away needs no answer.
        let _ = self.answer.send(answer);
    }
}

impl CommitQueue {
    /// Queues `request`; its answer comes through the receiver.
    fn join(&self, request: Arc<CommitRequest>) -> oneshot::Receiver<CommitAnswer> {
        let (answer, answered) = oneshot::channel();
        let caller = tracing::Span::current();
        self.lock().push(Waiting {
            request,
            answer,
            caller,
        });
        answered
    }

    /// Everything queued, oldest first; the queue is left empty.
    fn take(&self) -> Vec<Waiting> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        // Pushing and taking cannot panic halfway, so a poisoned queue is still whole.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Indexer {
    /// Queues `request` on its shard (`slot`, `queue`) and returns its answer, given by
    /// whichever commit takes the shard's lock first, this one or another.
    pub(super) async fn commit_in_turn(
        &self,
        slot: &Mutex<ShardState>,
        queue: &CommitQueue,
        request: CommitRequest,
    ) -> CommitAnswer {
        let request = Arc::new(request);
        loop {
            let mut answered = queue.join(request.clone());
            tokio::select! {
                biased;
                answer = &mut answered => match answer {
                    Ok(answer) => return answer,
                    // Taken by a commit whose caller went away: queue again.
                    Err(_) => continue,
                },
                mut state = slot.lock() => {
                    let taken = queue.take();
                    self.run_queue(&mut state, taken).await;
                }
            }
            // Answered by the run above, or (if a cancelled taker held it) never: then again.
            if let Ok(answer) = answered.await {
                return answer;
            }
        }
    }

    /// Runs the commits taken from a shard's queue under its lock, in order, and answers
    /// each. Consecutive commits bound for the shard log form one group.
    async fn run_queue(&self, state: &mut ShardState, taken: Vec<Waiting>) {
        // No span of its own: the store writes are children of the running commit's span
        // (and linked to the others' spans), so each produce trace leads to its write.
        let waiting: Vec<Waiting> = taken
            .into_iter()
            .filter(|w| !w.answer.is_closed())
            .collect();
        debug!(commits = waiting.len(), "running a shard's queued commits");
        let mut group = Vec::new();
        for w in waiting {
            match self.prepare(state, &w.request).await {
                Ok(Prepared::OnLog) if w.request.batches.len() <= BATCHES_PER_LOG_ITEM => {
                    group.push(w);
                }
                Ok(Prepared::Answered(response)) => w.answer(Ok(response)),
                Err(e) => w.answer(Err(e)),
                Ok(prepared) => {
                    self.commit_group(state, std::mem::take(&mut group)).await;
                    let answer = self.finish(state, &w.request, prepared).await;
                    w.answer(answer);
                }
            }
        }
        self.commit_group(state, group).await;
    }

    /// Appends a group of commits to the shard log (see [`Indexer::append_all`]) and answers
    /// each.
    async fn commit_group(&self, state: &mut ShardState, group: Vec<Waiting>) {
        let Some(shard) = group.first().map(|w| w.request.shard) else {
            return;
        };
        let running = tracing::Span::current().id();
        let commits: Vec<LogCommit<'_>> = group
            .iter()
            .map(|w| LogCommit {
                // The running commit's own write is its child already.
                caller: w.caller.id().filter(|id| Some(id) != running.as_ref()),
                ..LogCommit::whole(&w.request)
            })
            .collect();
        let answers = self.append_all(state, shard, &commits).await;
        drop(commits);
        for (w, answer) in group.into_iter().zip(answers) {
            let answer = answer.map(|outcomes| Self::answered(state, &w.request, outcomes));
            w.answer(answer);
        }
    }
}
