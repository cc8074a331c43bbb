//! The ingest role's Kafka APIs: Produce, InitProducerId and DeleteRecords.
//!
//! Metrics: records and bytes accepted per topic (the topic label is bounded by the number of
//! topics; handles are cached per topic id so a request costs a read lock and two atomic adds
//! per topic, nothing per record) and the produce latency from request in to answer out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafscale_shared::metrics as names;
use metrics::{Counter, Histogram};
use uuid::Uuid;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    ProducerId, RequestKind,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_shared::batch::{ValidatedBatch, validate_produce_batch};
use kafscale_shared::catalog::TopicRecord;
use kafscale_shared::keyed_records::{MAX_DECOMPRESSED_BYTES, records_without_key};
use kafscale_shared::sequencer::{BatchOutcome, Sequencer};
use kafscale_shared::topic_api::TopicApi;
use kafscale_shared::wire::{ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext};
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info_span, warn};

use crate::buffer::{FlushOutcome, SegmentBuffer};
use crate::delete_records::delete_records;
use crate::error::IngestError;
use crate::producer_ids::ProducerIds;

/// Produce v3-11 (record batches v2, topic names), InitProducerId v0-4, DeleteRecords v0-2.
pub const INGEST_APIS: [ApiSupport; 3] = [
    ApiSupport::new(ApiKey::Produce, 3, 11),
    ApiSupport::new(ApiKey::InitProducerId, 0, 4),
    ApiSupport::new(ApiKey::DeleteRecords, 0, 2),
];

/// Serves Produce, InitProducerId and DeleteRecords.
pub struct IngestHandler {
    topics: TopicApi,
    buffer: Arc<SegmentBuffer>,
    sequencer: Arc<dyn Sequencer>,
    producer_ids: Arc<ProducerIds>,
    metrics: ProduceMetrics,
}

impl IngestHandler {
    /// `sequencer` is the one the buffer's flusher commits to (it also moves log starts).
    pub fn new(
        topics: TopicApi,
        buffer: Arc<SegmentBuffer>,
        sequencer: Arc<dyn Sequencer>,
    ) -> Self {
        let producer_ids = Arc::new(ProducerIds::new(topics.catalog().clone()));
        IngestHandler {
            topics,
            buffer,
            sequencer,
            producer_ids,
            metrics: ProduceMetrics::default(),
        }
    }
}

/// The produce counters of one topic.
struct TopicCounters {
    records: Counter,
    bytes: Counter,
}

/// Produce metrics, with the per-topic handles resolved once per topic.
struct ProduceMetrics {
    latency: Histogram,
    topics: RwLock<HashMap<Uuid, Arc<TopicCounters>>>,
}

impl Default for ProduceMetrics {
    fn default() -> Self {
        ProduceMetrics {
            latency: metrics::histogram!(names::PRODUCE_DURATION),
            topics: RwLock::new(HashMap::new()),
        }
    }
}

impl ProduceMetrics {
    fn topic(&self, id: Uuid, name: &str) -> Arc<TopicCounters> {
        if let Some(c) = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return c.clone();
        }
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        topics
            .entry(id)
            .or_insert_with(|| {
                Arc::new(TopicCounters {
                    records: metrics::counter!(names::PRODUCE_RECORDS, "topic" => name.to_owned()),
                    bytes: metrics::counter!(names::PRODUCE_BYTES, "topic" => name.to_owned()),
                })
            })
            .clone()
    }

    /// Counts what one topic of a produce request put in the buffer.
    fn accepted(&self, id: Uuid, name: &str, records: u64, bytes: u64) {
        if bytes > 0 {
            let c = self.topic(id, name);
            c.records.increment(records);
            c.bytes.increment(bytes);
        }
    }
}

/// What a produce partition is waiting for.
enum PartitionWait {
    Done(Result<(i64, i64), IngestError>),
    Pending(oneshot::Receiver<FlushOutcome>),
}

/// The records a refusal names (Produce v8+ `record_errors`): clients fail those records with
/// the partition's error, and the rest of the batch with an error saying another record of
/// their batch was refused.
fn record_errors(error: &IngestError) -> Vec<BatchIndexAndErrorMessage> {
    let IngestError::KeylessRecords(indexes) = error else {
        return Vec::new();
    };
    indexes
        .iter()
        .map(|&i| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(i)
                .with_batch_index_error_message(Some(StrBytes::from_static_str(
                    "Compacted topic cannot accept message without key",
                )))
        })
        .collect()
}

/// How long a produce request waits for its commits before answering REQUEST_TIMED_OUT:
/// 90% of the request's `timeout_ms` (so the answer reaches the client before its own timer,
/// usually set to the same value, closes the connection), but at least
/// [`MIN_PRODUCE_ANSWER_TIME`], since a commit to object storage takes longer than the small
/// timeouts some clients send.
fn produce_answer_time(timeout_ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0) * 9 / 10)
        .max(MIN_PRODUCE_ANSWER_TIME)
}

/// The shortest time a produce request waits for its commits.
const MIN_PRODUCE_ANSWER_TIME: Duration = Duration::from_secs(1);

/// A partition's answer: the outcome of its one batch (see [`validate_produce_batch`]).
fn partition_result(outcome: FlushOutcome) -> Result<(i64, i64), IngestError> {
    match outcome?.as_slice() {
        [
            BatchOutcome::Appended {
                base_offset,
                log_start_offset,
            }
            | BatchOutcome::Duplicate {
                base_offset,
                log_start_offset,
            },
        ] => Ok((*base_offset, *log_start_offset)),
        [BatchOutcome::Rejected(r)] => Err(IngestError::Rejected(*r)),
        other => Err(IngestError::Commit(format!(
            "{} outcomes for one batch",
            other.len()
        ))),
    }
}

impl IngestHandler {
    /// Checks one partition's records: one valid batch within `max.message.bytes`, and on a
    /// compacted topic a key on every record (Kafka's rule; the others are named by index).
    fn validate_batch(
        &self,
        topic: &TopicRecord,
        records: &Bytes,
    ) -> Result<ValidatedBatch, IngestError> {
        let batch = validate_produce_batch(records, self.buffer.config().max_message_bytes)?;
        if self.topics.cluster_defaults().is_compacted(&topic.configs) {
            let keyless = records_without_key(&batch, MAX_DECOMPRESSED_BYTES)?;
            if !keyless.is_empty() {
                return Err(IngestError::KeylessRecords(keyless));
            }
        }
        Ok(batch)
    }

    async fn start_produce(&self, ctx: &RequestContext, request: ProduceRequest) -> Dispatch {
        let started = std::time::Instant::now();
        let acks = request.acks;
        let answer_within = produce_answer_time(request.timeout_ms);
        let deadline = tokio::time::Instant::from_std(started) + answer_within;
        // A trace of its own (not a child of the long-lived connection span): one produce
        // request is one trace, which the segment it lands in continues (see SegmentBuffer).
        let span = info_span!(parent: None, "produce", connection = ctx.connection_id, acks);
        let mut waits: Vec<(
            kafka_protocol::messages::TopicName,
            Vec<(i32, PartitionWait)>,
        )> = Vec::new();
        let invalid_acks = !matches!(acks, -1..=1);
        let transactional = request.transactional_id.is_some();
        for topic in request.topic_data {
            let name = topic.name.0.to_string();
            let resolved = if invalid_acks || transactional {
                None
            } else {
                Some(
                    self.topics
                        .resolve_or_create(&name, true)
                        .await
                        .map_err(|e| IngestError::from_catalog(&e)),
                )
            };
            let mut parts = Vec::with_capacity(topic.partition_data.len());
            let (mut records_in, mut bytes_in) = (0u64, 0u64);
            for p in topic.partition_data {
                let wait = match &resolved {
                    None if invalid_acks => PartitionWait::Done(Err(IngestError::Catalog(
                        format!("acks must be -1, 0 or 1, not {acks}"),
                        ResponseError::InvalidRequiredAcks,
                    ))),
                    None => PartitionWait::Done(Err(IngestError::Catalog(
                        "transactions are not supported".into(),
                        ResponseError::TransactionalIdAuthorizationFailed,
                    ))),
                    Some(Err(e)) => PartitionWait::Done(Err(e.clone())),
                    Some(Ok(t)) if p.index < 0 || p.index >= t.partitions => {
                        PartitionWait::Done(Err(IngestError::Rejected(
                            kafscale_shared::sequencer::RejectReason::UnknownTopicOrPartition,
                        )))
                    }
                    Some(Ok(t)) => {
                        let records = p.records.unwrap_or_default();
                        match self.validate_batch(t, &records) {
                            Err(e) => {
                                debug!(topic = %name, partition = p.index, error = %e, "rejected batch");
                                PartitionWait::Done(Err(e))
                            }
                            Ok(batch) => {
                                let (records, bytes) =
                                    (batch.header.record_count.max(0) as u64, batch.bytes.len());
                                match self
                                    .buffer
                                    .append(t.topic_id, p.index, vec![batch], &span)
                                    .await
                                {
                                    Ok(rx) => {
                                        records_in += records;
                                        bytes_in += bytes as u64;
                                        PartitionWait::Pending(rx)
                                    }
                                    Err(e) => PartitionWait::Done(Err(e)),
                                }
                            }
                        }
                    }
                };
                parts.push((p.index, wait));
            }
            if let Some(Ok(t)) = &resolved {
                self.metrics
                    .accepted(t.topic_id, &name, records_in, bytes_in);
            }
            waits.push((topic.name, parts));
        }

        let latency = self.metrics.latency.clone();
        let complete = async move {
            let mut response = ProduceResponse::default();
            for (name, parts) in waits {
                let mut topic = TopicProduceResponse::default();
                topic.name = name;
                for (index, wait) in parts {
                    let result = match wait {
                        PartitionWait::Done(r) => r,
                        PartitionWait::Pending(rx) => {
                            match tokio::time::timeout_at(deadline, rx).await {
                                Ok(Ok(outcome)) => partition_result(outcome),
                                Ok(Err(_)) => Err(IngestError::ShuttingDown),
                                Err(_) => {
                                    Err(IngestError::TimedOut(answer_within.as_millis() as u64))
                                }
                            }
                        }
                    };
                    let mut pr = PartitionProduceResponse::default();
                    pr.index = index;
                    pr.log_append_time_ms = -1;
                    match result {
                        Ok((base_offset, log_start_offset)) => {
                            pr.base_offset = base_offset;
                            pr.log_start_offset = log_start_offset;
                        }
                        Err(e) => {
                            pr.error_code = e.kafka_error().code();
                            pr.base_offset = -1;
                            pr.log_start_offset = -1;
                            pr.error_message = Some(StrBytes::from_string(e.to_string()));
                            pr.record_errors = record_errors(&e);
                        }
                    }
                    topic.partition_responses.push(pr);
                }
                response.responses.push(topic);
            }
            latency.record(started.elapsed().as_secs_f64());
            response
        };
        if acks == 0 {
            Dispatch::NoResponse(Box::pin(
                async move {
                    let _ = complete.await;
                }
                .instrument(span),
            ))
        } else {
            Dispatch::Respond(Box::pin(
                async move { Ok(complete.await.into()) }.instrument(span),
            ))
        }
    }

    async fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        let mut response = InitProducerIdResponse::default();
        response.producer_id = ProducerId(-1);
        response.producer_epoch = -1;
        if request.transactional_id.is_some() {
            response.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            return response;
        }
        // Without a transactional id Kafka hands out a fresh producer id whatever the request
        // names: bumping the epoch of the id it names would let any client fence another
        // client's producer (KIP-360's bump is for transactional producers). A producer that
        // asks again simply starts over, at sequence 0, under a new id.
        match self.producer_ids.next().await {
            Ok(id) => {
                response.producer_id = ProducerId(id);
                response.producer_epoch = 0;
            }
            Err(e) => {
                warn!(error = %e, "producer id allocation failed");
                response.error_code = ResponseError::CoordinatorNotAvailable.code();
            }
        }
        response
    }
}

#[async_trait::async_trait]
impl KafkaHandler for IngestHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        INGEST_APIS.to_vec()
    }

    async fn start(&self, ctx: RequestContext, request: RequestKind) -> Dispatch {
        match request {
            RequestKind::Produce(r) => self.start_produce(&ctx, r).await,
            RequestKind::InitProducerId(r) => Dispatch::ready(self.init_producer_id(r).await),
            RequestKind::DeleteRecords(r) => {
                let shard_count = self.buffer.config().shard_count;
                Dispatch::ready(
                    delete_records(&self.topics, &*self.sequencer, shard_count, r).await,
                )
            }
            _ => {
                let api = ctx.api_key;
                Dispatch::Respond(Box::pin(async move {
                    Err(HandlerError::Fatal(format!(
                        "ingest handler cannot serve {api:?}"
                    )))
                }))
            }
        }
    }
}
