//! Sends each commit to the in-process indexer that owns its shard, as the gateways'
//! `RemoteSequencer` does over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use kafscale_indexer::Indexer;
use kafscale_shared::sequencer::{
    CommitRequest, CommitResponse, DeleteRecordsRequest, DeleteRecordsResponse, Sequencer,
    SequencerError,
};

#[derive(Debug)]
pub(crate) struct ShardRouter {
    indexers: Vec<Arc<Indexer>>,
    /// Per shard, the indexer that last accepted one of its commits.
    owner: Vec<AtomicUsize>,
    /// Commits answered without an error.
    committed: AtomicU64,
}

impl ShardRouter {
    pub(crate) fn new(indexers: Vec<Arc<Indexer>>, shards: u32) -> Self {
        ShardRouter {
            indexers,
            owner: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            committed: AtomicU64::new(0),
        }
    }

    /// Commits answered without an error so far.
    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Asks the shard's last known owner first, then every other indexer once.
    async fn route<T, F, Fut>(&self, shard: u32, call: F) -> Result<T, SequencerError>
    where
        F: Fn(Arc<Indexer>) -> Fut,
        Fut: Future<Output = Result<T, SequencerError>>,
    {
        let Some(cached) = self.owner.get(shard as usize) else {
            return Err(SequencerError::InvalidRequest(format!(
                "shard {shard} is outside the simulated cluster"
            )));
        };
        let first = cached.load(Ordering::Relaxed);
        let n = self.indexers.len();
        for step in 0..n {
            let i = (first + step) % n;
            match call(self.indexers[i].clone()).await {
                Err(SequencerError::NotOwner { .. }) => continue,
                answer => {
                    cached.store(i, Ordering::Relaxed);
                    return answer;
                }
            }
        }
        Err(SequencerError::NotOwner { shard, owner: None })
    }
}

#[async_trait]
impl Sequencer for ShardRouter {
    async fn commit(&self, request: CommitRequest) -> Result<CommitResponse, SequencerError> {
        let shard = request.shard;
        let answer = self
            .route(shard, |indexer| {
                let request = request.clone();
                async move { indexer.commit(request).await }
            })
            .await;
        if answer.is_ok() {
            self.committed.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    async fn delete_records(
        &self,
        request: DeleteRecordsRequest,
    ) -> Result<DeleteRecordsResponse, SequencerError> {
        self.route(request.shard, |indexer| async move {
            indexer.delete_records(request).await
        })
        .await
    }
}
