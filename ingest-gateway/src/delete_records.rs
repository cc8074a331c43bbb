//! DeleteRecords: a partition's log start offset moves forward at its shard's owner.
//!
//! Kafka sends DeleteRecords to each partition's leader; here every gateway is a leader, and
//! the write itself belongs to the indexer that owns the partition's shard (the one writer of
//! its partition row), so the gateway forwards each partition through the [`Sequencer`] and
//! answers the new log start (Kafka's "low watermark"). Partitions are handled one after the
//! other; each is independent, and a failure answers that partition's error only.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafscale_shared::sequencer::{self, Sequencer, SequencerError};
use kafscale_shared::shards::shard_of;
use kafscale_shared::topic_api::{TopicApi, catalog_error_code};
use tracing::{info, warn};

/// The Kafka error of a failed log start move.
fn error_of(e: &SequencerError) -> ResponseError {
    match e {
        SequencerError::UnknownPartition => ResponseError::UnknownTopicOrPartition,
        SequencerError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        SequencerError::NotOwner { .. }
        | SequencerError::Fenced(_)
        | SequencerError::Unreachable(_)
        | SequencerError::ShuttingDown => ResponseError::NotLeaderOrFollower,
        SequencerError::StoreUnavailable(_) | SequencerError::Unauthorized => {
            ResponseError::KafkaStorageError
        }
        SequencerError::InvalidRequest(_) | SequencerError::SegmentExpired(_) => {
            ResponseError::InvalidRequest
        }
    }
}

/// Answers a DeleteRecords request.
pub(crate) async fn delete_records(
    topics: &TopicApi,
    sequencer: &dyn Sequencer,
    shard_count: u32,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let record = topics.catalog().topic(&name).await;
        let mut results = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let answer = |low: i64, error: Option<ResponseError>| {
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(low)
                    .with_error_code(error.map_or(0, |e| e.code()))
            };
            let topic_id = match &record {
                Ok(Some(t)) if (0..t.partitions).contains(&p.partition_index) => t.topic_id,
                Ok(_) => {
                    results.push(answer(-1, Some(ResponseError::UnknownTopicOrPartition)));
                    continue;
                }
                Err(e) => {
                    results.push(answer(-1, Some(catalog_error_code(e))));
                    continue;
                }
            };
            let moved = sequencer
                .delete_records(sequencer::DeleteRecordsRequest {
                    shard: shard_of(topic_id, p.partition_index, shard_count),
                    topic_id,
                    partition: p.partition_index,
                    offset: p.offset,
                })
                .await;
            results.push(match moved {
                Ok(r) => {
                    info!(topic = name, partition = p.partition_index, log_start = r.log_start_offset, "records deleted");
                    answer(r.log_start_offset, None)
                }
                Err(e) => {
                    warn!(topic = name, partition = p.partition_index, offset = p.offset, error = %e, "delete records refused");
                    answer(-1, Some(error_of(&e)))
                }
            });
        }
        response.topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(results),
        );
    }
    response
}
