//! ListOffsets: earliest, latest, max timestamp and by-timestamp lookups.
//!
//! A timestamp lookup finds the first index entry whose max timestamp reaches the target, then
//! the first batch in it that does, and decodes only that batch's records to return the exact
//! first offset whose timestamp is ≥ the target (Kafka's semantics).

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;
use kafscale_shared::batch::iter_batches;
use uuid::Uuid;

use crate::error::FetchError;
use crate::fetch::FetchService;

/// Special timestamps of ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

impl FetchService {
    /// The first offset whose record timestamp is ≥ `timestamp` (ms), as ListOffsets finds
    /// it; `None` when no record is that recent.
    pub async fn offset_for_timestamp(
        &self,
        topic_id: Uuid,
        partition: i32,
        timestamp: i64,
    ) -> Result<Option<i64>, FetchError> {
        let (offset, _) = self.lookup(topic_id, partition, timestamp.max(0)).await?;
        Ok((offset >= 0).then_some(offset))
    }

    /// (offset, timestamp) for one partition; (-1, -1) when no record matches.
    async fn lookup(
        &self,
        topic_id: Uuid,
        partition: i32,
        timestamp: i64,
    ) -> Result<(i64, i64), FetchError> {
        let offsets = self.offsets(topic_id, partition).await?;
        match timestamp {
            LATEST | LATEST_TIERED => Ok((offsets.high_watermark, -1)),
            EARLIEST | EARLIEST_LOCAL => Ok((offsets.log_start_offset, -1)),
            MAX_TIMESTAMP => {
                let entries = self
                    .index
                    .scan(topic_id, partition, offsets.log_start_offset)
                    .await?;
                let best = entries
                    .iter()
                    .filter(|e| e.last_offset < offsets.high_watermark)
                    .max_by_key(|e| (e.max_timestamp, std::cmp::Reverse(e.base_offset)));
                match best {
                    None => Ok((-1, -1)),
                    Some(e) => self.find_in_entry(e, |ts, best| ts > best, i64::MIN).await,
                }
            }
            t if t >= 0 => {
                let entries = self
                    .index
                    .scan(topic_id, partition, offsets.log_start_offset)
                    .await?;
                for e in entries
                    .iter()
                    .filter(|e| e.last_offset < offsets.high_watermark)
                {
                    if e.max_timestamp >= t {
                        let found = self.find_in_entry(e, |ts, _| ts >= t, t).await?;
                        if found.0 >= 0 {
                            return Ok(found);
                        }
                    }
                }
                Ok((-1, -1))
            }
            _ => Err(FetchError::Corrupt(format!(
                "invalid ListOffsets timestamp {timestamp}"
            ))),
        }
    }

    /// Decodes the entry's batches that may match and returns the first record accepted by
    /// `better(record_ts, best_so_far)`: with `>=` that is the first record at or after the
    /// target; with `>` it is the (first) record with the largest timestamp.
    async fn find_in_entry(
        &self,
        entry: &kafscale_shared::catalog::IndexEntry,
        better: impl Fn(i64, i64) -> bool,
        floor: i64,
    ) -> Result<(i64, i64), FetchError> {
        let data = self.ranges.read(entry).await?;
        let is_search = floor != i64::MIN;
        let mut best: Option<(i64, i64)> = None;
        for (header, range) in iter_batches(&data) {
            if is_search && header.max_timestamp < floor {
                continue;
            }
            let mut buf: Bytes = data.slice(range);
            let set = RecordBatchDecoder::decode(&mut buf)
                .map_err(|e| FetchError::Corrupt(format!("cannot decode stored batch: {e}")))?;
            for r in set.records {
                let current = best.map(|b| b.1).unwrap_or(i64::MIN);
                if better(r.timestamp, current) && (best.is_none() || !is_search) {
                    best = Some((r.offset, r.timestamp));
                    if is_search {
                        return Ok((r.offset, r.timestamp));
                    }
                }
            }
        }
        Ok(best.unwrap_or((-1, -1)))
    }

    pub async fn list_offsets(
        &self,
        request: ListOffsetsRequest,
        version: i16,
    ) -> ListOffsetsResponse {
        let mut response = ListOffsetsResponse::default();
        for t in request.topics {
            let topic = self
                .catalog
                .topic(&t.name.0)
                .await
                .map_err(FetchError::from);
            let mut out = ListOffsetsTopicResponse::default();
            out.name = t.name.clone();
            for p in t.partitions {
                let mut r = ListOffsetsPartitionResponse::default();
                r.partition_index = p.partition_index;
                let result = match &topic {
                    Ok(Some(topic))
                        if p.partition_index >= 0 && p.partition_index < topic.partitions =>
                    {
                        self.lookup(topic.topic_id, p.partition_index, p.timestamp)
                            .await
                    }
                    Err(e) => Err(e.clone()),
                    Ok(_) => Err(FetchError::UnknownTopicOrPartition),
                };
                match result {
                    Ok((offset, timestamp)) => {
                        r.offset = offset;
                        r.timestamp = timestamp;
                        if version >= 4 {
                            r.leader_epoch = 0;
                        }
                    }
                    Err(e) => {
                        r.error_code = e.kafka_error().code();
                        r.offset = -1;
                        r.timestamp = -1;
                    }
                }
                out.partitions.push(r);
            }
            response.topics.push(out);
        }
        response
    }
}
