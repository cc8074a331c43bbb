//! ListOffsets: earliest, latest, max timestamp and by-timestamp lookups.
//!
//! A timestamp lookup finds the first index entry whose max timestamp reaches the target, then
//! the first batch in it that does, and decodes only that batch's records to return the exact
//! first offset whose timestamp is ≥ the target (Kafka's semantics).
//!
//! The entry is found by binary search over the partition's offsets: each entry carries the
//! running maximum of the partition's timestamps up to it, which only grows with the offset
//! (Kafka's time index is built the same way), so "the first entry whose running maximum
//! reaches T" is one point read per halving, about log2(offsets) reads instead of a scan of
//! the whole index. The first record with a timestamp ≥ T lies in that entry, unless the
//! running maximum came from records retention has removed since; then (and for entries
//! written before the running maximum existed) the entries are scanned from there.

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;
use kafscale_shared::catalog::IndexEntry;
use kafscale_shared::watermarks::PartitionOffsets;
use uuid::Uuid;

use crate::error::FetchError;
use crate::fetch::FetchService;

/// What the binary search over running maxima found.
enum Search {
    /// The first entry whose running maximum reaches the target.
    Found(IndexEntry),
    /// No entry does: no record is that recent.
    NoneReaches,
    /// An entry without a running maximum (or a hole): scan instead.
    Unknown,
}

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
                self.max_timestamp_offset(topic_id, partition, offsets)
                    .await
            }
            t if t >= 0 => {
                // Records below the log start (DeleteRecords into an entry) are not offered.
                let floor = offsets.log_start_offset;
                let from = match self
                    .first_entry_reaching(topic_id, partition, offsets, t)
                    .await?
                {
                    Search::Found(e) if e.max_timestamp >= t => {
                        let found = self.find_in_entry(&e, |ts, _| ts >= t, t, floor).await?;
                        if found.0 >= 0 {
                            return Ok(found);
                        }
                        e.base_offset
                    }
                    Search::Found(e) => e.base_offset,
                    Search::NoneReaches => return Ok((-1, -1)),
                    Search::Unknown => offsets.log_start_offset,
                };
                let entries = self.index.scan(topic_id, partition, from).await?;
                for e in entries
                    .iter()
                    .filter(|e| e.last_offset < offsets.high_watermark)
                {
                    if e.max_timestamp >= t {
                        let found = self.find_in_entry(e, |ts, _| ts >= t, t, floor).await?;
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

    /// (offset, timestamp) of the first record with the partition's largest timestamp, among
    /// the records from the log start on; (-1, -1) for an empty partition.
    async fn max_timestamp_offset(
        &self,
        topic_id: Uuid,
        partition: i32,
        offsets: PartitionOffsets,
    ) -> Result<(i64, i64), FetchError> {
        let floor = offsets.log_start_offset;
        let newest = |ts: i64, best: i64| ts > best;
        if let Some(e) = self
            .entry_with_max_timestamp(topic_id, partition, offsets)
            .await?
            .filter(|e| e.base_offset >= floor)
        {
            return self.find_in_entry(&e, newest, i64::MIN, floor).await;
        }
        let entries = self.index.scan(topic_id, partition, floor).await?;
        let live = entries
            .iter()
            .filter(|e| e.last_offset < offsets.high_watermark);
        // An entry that starts below the log start may hold its maximum below it: its own
        // best record is looked up; every other entry's maximum is a record of its own.
        let (head, rest): (Vec<&IndexEntry>, Vec<&IndexEntry>) =
            live.partition(|e| e.base_offset < floor);
        let mut best = (-1, -1);
        for e in head {
            let found = self.find_in_entry(e, newest, i64::MIN, floor).await?;
            if found.0 >= 0 && (best.0 < 0 || found.1 > best.1) {
                best = found;
            }
        }
        let Some(e) = rest
            .into_iter()
            .max_by_key(|e| (e.max_timestamp, std::cmp::Reverse(e.base_offset)))
        else {
            return Ok(best);
        };
        if best.0 >= 0 && best.1 >= e.max_timestamp {
            return Ok(best);
        }
        self.find_in_entry(e, newest, i64::MIN, floor).await
    }

    /// The first entry whose running maximum timestamp is ≥ `t`, by binary search over the
    /// offsets from the log start to the high watermark (see the module docs).
    async fn first_entry_reaching(
        &self,
        topic_id: Uuid,
        partition: i32,
        offsets: PartitionOffsets,
        t: i64,
    ) -> Result<Search, FetchError> {
        let (mut lo, mut hi) = (offsets.log_start_offset, offsets.high_watermark);
        let mut found = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(entry) = self.entry_holding(topic_id, partition, mid).await? else {
                return Ok(Search::Unknown);
            };
            let Some(running) = entry.running_max_timestamp else {
                return Ok(Search::Unknown);
            };
            if running >= t {
                hi = entry.base_offset.min(mid);
                found = Some(entry);
            } else {
                lo = entry.last_offset + 1;
            }
        }
        Ok(found.map_or(Search::NoneReaches, Search::Found))
    }

    /// The first entry holding the partition's largest timestamp, if the running maxima say
    /// which (`None`: scan instead).
    async fn entry_with_max_timestamp(
        &self,
        topic_id: Uuid,
        partition: i32,
        offsets: PartitionOffsets,
    ) -> Result<Option<IndexEntry>, FetchError> {
        if offsets.high_watermark <= offsets.log_start_offset {
            return Ok(None);
        }
        let last = offsets.high_watermark - 1;
        let Some(newest) = self.entry_holding(topic_id, partition, last).await? else {
            return Ok(None);
        };
        let Some(max) = newest.running_max_timestamp else {
            return Ok(None);
        };
        match self
            .first_entry_reaching(topic_id, partition, offsets, max)
            .await?
        {
            // Its own maximum is the partition's unless retention removed the record.
            Search::Found(e) if e.max_timestamp == max => Ok(Some(e)),
            _ => Ok(None),
        }
    }

    /// The index entry holding `offset`, read from the store (one point read).
    async fn entry_holding(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    ) -> Result<Option<IndexEntry>, FetchError> {
        let page = self
            .catalog
            .index_entries_from(topic_id, partition, offset, Some(1))
            .await?;
        Ok(page.into_iter().next().filter(|e| e.base_offset <= offset))
    }

    /// Decodes the entry's batches that may match and returns the first record at or above
    /// `min_offset` accepted by `better(record_ts, best_so_far)`: with `>=` that is the first
    /// record at or after the target `floor`; with `>` (and `floor` i64::MIN) it is the
    /// (first) record with the largest timestamp.
    async fn find_in_entry(
        &self,
        entry: &IndexEntry,
        better: impl Fn(i64, i64) -> bool,
        floor: i64,
        min_offset: i64,
    ) -> Result<(i64, i64), FetchError> {
        let data = self.ranges.read(entry).await?;
        let is_search = floor != i64::MIN;
        let mut best: Option<(i64, i64)> = None;
        for batch in data.batches() {
            let below_log_start = batch.last_offset < min_offset;
            if below_log_start || (is_search && batch.max_timestamp < floor) {
                continue;
            }
            let mut buf: Bytes = data.batch_bytes(&batch);
            let set = RecordBatchDecoder::decode(&mut buf)
                .map_err(|e| FetchError::Corrupt(format!("cannot decode stored batch: {e}")))?;
            for r in set.records.into_iter().filter(|r| r.offset >= min_offset) {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use kafscale_shared::catalog::{self, Catalog, ITEM_FORMAT};
    use kafscale_shared::meta_store::metrics::MetaStoreOp;
    use kafscale_shared::meta_store::{Condition, MemoryMetaStore, MetaStore, WriteOp};
    use kafscale_shared::metered::MeteredMetaStore;
    use kafscale_shared::object_store::MemoryObjectStore;
    use kafscale_shared::watermarks::Watermarks;
    use proptest::prelude::*;

    use super::*;
    use crate::FetchConfig;

    /// A partition of entries of 10 offsets each with these max timestamps, from `log_start`.
    async fn partition(
        max_timestamps: &[i64],
        log_start_entry: usize,
    ) -> (
        Arc<FetchService>,
        Arc<MeteredMetaStore>,
        Uuid,
        PartitionOffsets,
    ) {
        let store = Arc::new(MeteredMetaStore::new(Arc::new(MemoryMetaStore::new())));
        let catalog = Arc::new(Catalog::new(store.clone()));
        let topic_id = catalog
            .create_topic("t", 1, BTreeMap::new())
            .await
            .expect("create")
            .topic_id;
        let mut running = -1;
        let mut ops = Vec::new();
        for (i, max) in max_timestamps.iter().enumerate() {
            running = running.max(*max);
            let base_offset = 10 * i as i64;
            if i < log_start_entry {
                continue;
            }
            let entry = IndexEntry {
                format: ITEM_FORMAT,
                base_offset,
                last_offset: base_offset + 9,
                segment_key: format!("segments/{i}"),
                byte_start: 0,
                byte_len: 100,
                batch_count: 1,
                record_count: 10,
                first_timestamp: *max,
                max_timestamp: *max,
                running_max_timestamp: Some(running),
            };
            ops.push(WriteOp::Put {
                key: catalog::index_key(topic_id, 0, entry.last_offset),
                value: catalog::encode(&entry),
                condition: Condition::None,
            });
        }
        store.write(ops).await.expect("write");
        let service = FetchService::new(
            catalog,
            Arc::new(MemoryObjectStore::new()),
            Arc::new(Watermarks::new()),
            FetchConfig::default(),
        );
        let offsets = PartitionOffsets {
            log_start_offset: 10 * log_start_entry as i64,
            high_watermark: 10 * max_timestamps.len() as i64,
        };
        (service, store, topic_id, offsets)
    }

    fn queries(store: &MeteredMetaStore) -> u64 {
        store.metrics().get(MetaStoreOp::Query).requests
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// The binary search finds the entry a scan would start from, in about log2 reads.
        #[test]
        fn the_search_finds_the_first_entry_reaching_the_target_in_log_reads(
            max_timestamps in proptest::collection::vec(0i64..1000, 1..300),
            log_start_entry in 0usize..5,
            target in 0i64..1100,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            runtime.block_on(async {
                let log_start_entry = log_start_entry.min(max_timestamps.len() - 1);
                let (service, store, topic_id, offsets) =
                    partition(&max_timestamps, log_start_entry).await;
                let before = queries(&store);
                let found = service
                    .first_entry_reaching(topic_id, 0, offsets, target)
                    .await
                    .expect("search");
                let reads = queries(&store) - before;
                // Brute force over the running maxima of what is left.
                let mut running = -1;
                let expected = max_timestamps.iter().enumerate().find_map(|(i, max)| {
                    running = running.max(*max);
                    (i >= log_start_entry && running >= target).then_some(10 * i as i64)
                });
                match found {
                    Search::Found(e) => assert_eq!(Some(e.base_offset), expected),
                    Search::NoneReaches => assert_eq!(expected, None),
                    Search::Unknown => panic!("every entry has a running maximum"),
                }
                let offsets_span = 10 * (max_timestamps.len() - log_start_entry) as u64;
                let bound = 64 - offsets_span.leading_zeros() as u64 + 1;
                assert!(reads <= bound, "{reads} reads for {offsets_span} offsets");
            });
        }
    }
}
