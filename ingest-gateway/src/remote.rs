//! The network implementation of [`Sequencer`]: sends each shard's commits (and DeleteRecords)
//! to the indexer that holds the shard's lease.
//!
//! Owners are found through the lease items in the metadata store (cached briefly). When the
//! owner answers "not mine"/"fenced" or cannot be reached, the directory is re-read and the
//! commit re-sent — safe, because commits are idempotent per segment and shard — until a new
//! owner takes the shard over or `failover_timeout` passes.
//!
//! Every call carries the cluster-internal token when one is configured. An indexer that
//! refuses it (401) is not asked again for this request: a wrong token is a configuration
//! error that no retry mends, so the produce fails at once with a retriable error (the
//! client's own backoff paces the next attempt) and a warning, at most every
//! [`REFUSAL_LOG_INTERVAL`], says so — without the token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use kafscale_shared::catalog::{Catalog, now_ms};
use kafscale_shared::http_client::{HttpClient, InternalCalls};
use kafscale_shared::sequencer::{
    CommitRequest, CommitResponse, DeleteRecordsRequest, DeleteRecordsResponse, Sequencer,
    SequencerError,
};
use kafscale_shared::shards::{SHARD_LEASE_PREFIX, shard_of_lease_name};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tracing::{debug, warn};

/// Paths of the indexer's commit and DeleteRecords endpoints.
const COMMIT_PATH: &str = "/v1/commit";
const DELETE_RECORDS_PATH: &str = "/v1/delete-records";
const DIRECTORY_TTL: Duration = Duration::from_secs(1);
/// Shortest time between two warnings about a refused internal token.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Settings of the network sequencer.
#[derive(Debug, Clone)]
pub struct RemoteSequencerConfig {
    /// How long one HTTP commit may take.
    pub request_timeout: Duration,
    /// How long to keep re-resolving an owner that is gone (cover the lease time).
    pub failover_timeout: Duration,
    /// The token sent on every call (redacted in `Debug`) and HTTPS to the indexers.
    pub internal: InternalCalls,
}

impl Default for RemoteSequencerConfig {
    fn default() -> Self {
        RemoteSequencerConfig {
            request_timeout: Duration::from_secs(10),
            failover_timeout: Duration::from_secs(30),
            internal: InternalCalls::default(),
        }
    }
}

/// Sends commits to shard owners over HTTP.
pub struct RemoteSequencer {
    catalog: Arc<Catalog>,
    client: HttpClient,
    config: RemoteSequencerConfig,
    owners: Mutex<(Option<Instant>, HashMap<u32, String>)>,
    /// When a refused token was last warned about.
    last_refusal_log: std::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RemoteSequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSequencer")
            .field("config", &self.config)
            .finish()
    }
}

impl RemoteSequencer {
    pub fn new(catalog: Arc<Catalog>, config: RemoteSequencerConfig) -> Self {
        let client = config.internal.client(Duration::from_secs(2));
        RemoteSequencer {
            catalog,
            client,
            config,
            owners: Mutex::new((None, HashMap::new())),
            last_refusal_log: std::sync::Mutex::new(None),
        }
    }

    /// Warns that `addr` refused the token, unless that was said less than
    /// [`REFUSAL_LOG_INTERVAL`] ago.
    fn warn_refused(&self, addr: &str) {
        let Ok(mut last) = self.last_refusal_log.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        warn!(
            indexer = %addr,
            configured = self.config.internal.token.is_some(),
            "indexer refused the internal token: produce and DeleteRecords fail until the \
             gateway and indexers share the same --internal-token-file"
        );
    }

    /// The address of `shard`'s live owner, from the cached directory or the store.
    async fn owner(&self, shard: u32, refresh: bool) -> Result<Option<String>, SequencerError> {
        let mut owners = self.owners.lock().await;
        let fresh = owners.0.is_some_and(|t| t.elapsed() < DIRECTORY_TTL);
        if refresh || !fresh || !owners.1.contains_key(&shard) {
            let leases = self
                .catalog
                .leases(SHARD_LEASE_PREFIX)
                .await
                .map_err(|e| SequencerError::StoreUnavailable(e.to_string()))?;
            let now = now_ms();
            owners.1.clear();
            for (name, lease, _) in leases {
                if lease.expires_at_ms > now
                    && !lease.owner_addr.is_empty()
                    && let Some(shard) = shard_of_lease_name(&name)
                {
                    owners.1.insert(shard, lease.owner_addr);
                }
            }
            owners.0 = Some(Instant::now());
        }
        Ok(owners.1.get(&shard).cloned())
    }

    async fn send<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Bytes,
    ) -> Result<T, SequencerError> {
        let uri = self.client.url(addr, path);
        let answer = self
            .client
            .post_json(&uri, body, self.config.request_timeout)
            .await
            .map_err(|e| SequencerError::Unreachable(e.to_string()))?;
        let status = answer.status();
        if status.as_u16() == 401 {
            self.warn_refused(addr);
            return Err(SequencerError::Unauthorized);
        }
        if status.is_success() {
            serde_json::from_slice::<T>(answer.body())
                .map_err(|e| SequencerError::Unreachable(format!("bad indexer answer: {e}")))
        } else {
            Err(
                serde_json::from_slice::<SequencerError>(answer.body()).unwrap_or_else(|_| {
                    SequencerError::Unreachable(format!("indexer answered {status}"))
                }),
            )
        }
    }

    /// Sends `request` to `shard`'s owner at `path`, re-resolving the owner while it is gone
    /// or changing hands, until `failover_timeout` passes. Only for idempotent requests.
    async fn call<T: DeserializeOwned>(
        &self,
        shard: u32,
        path: &str,
        request: &impl Serialize,
    ) -> Result<T, SequencerError> {
        let body = Bytes::from(
            serde_json::to_vec(request)
                .map_err(|e| SequencerError::InvalidRequest(e.to_string()))?,
        );
        let deadline = Instant::now() + self.config.failover_timeout;
        let mut delay = Duration::from_millis(50);
        let mut refresh = false;
        loop {
            let outcome = match self.owner(shard, refresh).await? {
                Some(addr) => self.send(&addr, path, body.clone()).await,
                None => Err(SequencerError::NotOwner { shard, owner: None }),
            };
            match outcome {
                Ok(r) => return Ok(r),
                Err(
                    e @ (SequencerError::NotOwner { .. }
                    | SequencerError::Fenced(_)
                    | SequencerError::Unreachable(_)),
                ) if Instant::now() < deadline => {
                    debug!(shard, error = %e, "shard owner changed or unreachable; re-resolving");
                    refresh = true;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                // Already warned about, at a bounded rate (see `warn_refused`).
                Err(e @ SequencerError::Unauthorized) => return Err(e),
                Err(e) => {
                    warn!(shard, path, error = %e, "indexer request failed");
                    return Err(e);
                }
            }
        }
    }
}

#[async_trait]
impl Sequencer for RemoteSequencer {
    async fn commit(&self, request: CommitRequest) -> Result<CommitResponse, SequencerError> {
        self.call(request.shard, COMMIT_PATH, &request).await
    }

    /// Idempotent too: moving the log start to the same offset again changes nothing.
    async fn delete_records(
        &self,
        request: DeleteRecordsRequest,
    ) -> Result<DeleteRecordsResponse, SequencerError> {
        self.call(request.shard, DELETE_RECORDS_PATH, &request)
            .await
    }
}
