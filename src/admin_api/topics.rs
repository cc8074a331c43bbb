//! `/v1/topics...`: list, create, describe and delete topics, their configs as stored, and a
//! partition's offset-index entries (which segment object and byte range hold which offsets).
//! Everything is read from and written to the catalog, exactly as the Kafka topic APIs do.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use kafscale_shared::catalog::{IndexEntry, TopicRecord};
use kafscale_shared::keys::segment_created_ms;
use kafscale_shared::topic_config::validate_configs;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::error::{ApiError, ApiJson, ErrorBody};

/// Most partitions a topic created through the admin API may have.
const MAX_PARTITIONS: i32 = 10_000;
/// Default and largest number of index entries one segments request returns.
const DEFAULT_SEGMENTS: u32 = 1_000;
const MAX_SEGMENTS: u32 = 10_000;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TopicSummary {
    pub(crate) name: String,
    pub(crate) topic_id: String,
    pub(crate) partitions: i32,
    /// Bytes stored, over all partitions.
    pub(crate) bytes: u64,
    /// Records between the log start offsets and the high watermarks.
    pub(crate) records: i64,
    pub(crate) created_at_ms: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TopicList {
    pub(crate) topics: Vec<TopicSummary>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "orders", "partitions": 3, "configs": {"retention.ms": "86400000"}}))]
pub(crate) struct CreateTopic {
    /// Kafka's rules: 1-249 of ASCII letters, digits, '.', '_' and '-' ("." and ".." are not
    /// allowed).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,249}$", min_length = 1, max_length = 249)]
    pub(crate) name: String,
    /// Default: the process's --default-partitions.
    #[schema(minimum = 1, maximum = 10000)]
    pub(crate) partitions: Option<i32>,
    /// Topic configs (e.g. retention.ms), validated like CreateTopics' (see docs/operations.md);
    /// an unknown config or a bad value is a 400.
    #[serde(default)]
    pub(crate) configs: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct PartitionInfo {
    pub(crate) partition: i32,
    pub(crate) log_start_offset: i64,
    pub(crate) high_watermark: i64,
    pub(crate) records: i64,
    pub(crate) bytes: u64,
    /// Offset-index entries (one per run of batches in one segment object).
    pub(crate) index_entries: u64,
    /// When the segment holding the newest entry was written (ms since the epoch).
    pub(crate) last_append_ms: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TopicDescription {
    pub(crate) name: String,
    pub(crate) topic_id: String,
    pub(crate) created_at_ms: i64,
    pub(crate) configs: BTreeMap<String, String>,
    pub(crate) bytes: u64,
    pub(crate) records: i64,
    pub(crate) partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TopicConfigs {
    pub(crate) topic: String,
    pub(crate) configs: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SegmentQuery {
    /// First offset of interest: entries whose last offset is at or after it.
    #[param(minimum = 0)]
    from_offset: Option<i64>,
    /// Most entries returned (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SegmentEntry {
    pub(crate) base_offset: i64,
    pub(crate) last_offset: i64,
    pub(crate) segment_key: String,
    pub(crate) byte_start: u64,
    pub(crate) byte_len: u64,
    pub(crate) batch_count: u32,
    pub(crate) record_count: u64,
    pub(crate) first_timestamp: i64,
    pub(crate) max_timestamp: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SegmentList {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) entries: Vec<SegmentEntry>,
}

#[utoipa::path(
    get, path = "/v1/topics", tag = "topics",
    summary = "Every topic with its partition count, bytes and records",
    responses(
        (status = 200, body = TopicList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn list(State(s): State<AdminState>) -> Result<Json<TopicList>, ApiError> {
    let mut topics = Vec::new();
    for t in s.catalog().list_topics().await? {
        let (bytes, records) = totals(&partition_rows(&s, &t).await?);
        topics.push(TopicSummary {
            name: t.name,
            topic_id: t.topic_id.to_string(),
            partitions: t.partitions,
            bytes,
            records,
            created_at_ms: t.created_at_ms,
        });
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(TopicList { topics }))
}

#[utoipa::path(
    post, path = "/v1/topics", tag = "topics",
    summary = "Create a topic",
    request_body = CreateTopic,
    responses(
        (status = 201, body = TopicSummary),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create(
    State(s): State<AdminState>,
    ApiJson(body): ApiJson<CreateTopic>,
) -> Result<(StatusCode, Json<TopicSummary>), ApiError> {
    let partitions = body.partitions.unwrap_or(s.inner.default_partitions);
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(ApiError::BadRequest(format!(
            "partitions must be between 1 and {MAX_PARTITIONS}, not {partitions}"
        )));
    }
    validate_configs(&body.configs).map_err(|e| ApiError::BadRequest(e.0))?;
    let t = s
        .catalog()
        .create_topic(&body.name, partitions, body.configs)
        .await?;
    info!(
        topic = t.name,
        partitions, "topic created through the admin API"
    );
    Ok((
        StatusCode::CREATED,
        Json(TopicSummary {
            name: t.name,
            topic_id: t.topic_id.to_string(),
            partitions: t.partitions,
            bytes: 0,
            records: 0,
            created_at_ms: t.created_at_ms,
        }),
    ))
}

#[utoipa::path(
    get, path = "/v1/topics/{topic}", tag = "topics",
    summary = "A topic with per-partition offsets, bytes, index entries and last append time",
    params(("topic" = String, Path, description = "Topic name", example = "demo")),
    responses(
        (status = 200, body = TopicDescription),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
#[tracing::instrument(skip(s))]
pub(crate) async fn describe(
    State(s): State<AdminState>,
    Path(topic): Path<String>,
) -> Result<Json<TopicDescription>, ApiError> {
    let t = known_topic(&s, &topic).await?;
    let rows = partition_rows(&s, &t).await?;
    let (bytes, records) = totals(&rows);
    let mut partitions = Vec::with_capacity(rows.len());
    for mut p in rows {
        let entries = s
            .catalog()
            .index_entries_from(t.topic_id, p.partition, p.log_start_offset, None)
            .await?;
        p.index_entries = entries.len() as u64;
        p.last_append_ms = entries
            .last()
            .and_then(|e| segment_created_ms(&e.segment_key));
        partitions.push(p);
    }
    Ok(Json(TopicDescription {
        name: t.name,
        topic_id: t.topic_id.to_string(),
        created_at_ms: t.created_at_ms,
        configs: t.configs,
        bytes,
        records,
        partitions,
    }))
}

#[utoipa::path(
    delete, path = "/v1/topics/{topic}", tag = "topics",
    summary = "Delete a topic (its data becomes unreachable at once)",
    params(("topic" = String, Path, description = "Topic name", example = "demo")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
#[tracing::instrument(skip(s))]
pub(crate) async fn delete(
    State(s): State<AdminState>,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    let t = s.catalog().delete_topic(&topic).await?;
    info!(topic = t.name, "topic deleted through the admin API");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/topics/{topic}/configs", tag = "topics",
    summary = "A topic's configs as stored",
    params(("topic" = String, Path, description = "Topic name", example = "demo")),
    responses(
        (status = 200, body = TopicConfigs),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn configs(
    State(s): State<AdminState>,
    Path(topic): Path<String>,
) -> Result<Json<TopicConfigs>, ApiError> {
    let t = known_topic(&s, &topic).await?;
    Ok(Json(TopicConfigs {
        topic: t.name,
        configs: t.configs,
    }))
}

#[utoipa::path(
    get, path = "/v1/topics/{topic}/partitions/{partition}/segments", tag = "topics",
    summary = "A partition's offset-index entries: offsets, segment object and byte range",
    params(
        ("topic" = String, Path, description = "Topic name", example = "demo"),
        ("partition" = i32, Path, description = "Partition number", minimum = 0, example = 0),
        SegmentQuery,
    ),
    responses(
        (status = 200, body = SegmentList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
#[tracing::instrument(skip(s))]
pub(crate) async fn segments(
    State(s): State<AdminState>,
    Path((topic, partition)): Path<(String, i32)>,
    Query(q): Query<SegmentQuery>,
) -> Result<Json<SegmentList>, ApiError> {
    let t = known_topic(&s, &topic).await?;
    if !(0..t.partitions).contains(&partition) {
        return Err(ApiError::UnknownPartition { topic, partition });
    }
    let limit = q.limit.unwrap_or(DEFAULT_SEGMENTS);
    if !(1..=MAX_SEGMENTS).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_SEGMENTS}"
        )));
    }
    let entries = s
        .catalog()
        .index_entries_from(
            t.topic_id,
            partition,
            q.from_offset.unwrap_or(0).max(0),
            Some(limit as usize),
        )
        .await?;
    Ok(Json(SegmentList {
        topic: t.name,
        partition,
        entries: entries.into_iter().map(segment_entry).collect(),
    }))
}

fn segment_entry(e: IndexEntry) -> SegmentEntry {
    SegmentEntry {
        base_offset: e.base_offset,
        last_offset: e.last_offset,
        segment_key: e.segment_key,
        byte_start: e.byte_start,
        byte_len: e.byte_len,
        batch_count: e.batch_count,
        record_count: e.record_count,
        first_timestamp: e.first_timestamp,
        max_timestamp: e.max_timestamp,
    }
}

/// The topic, or 404.
pub(super) async fn known_topic(s: &AdminState, name: &str) -> Result<TopicRecord, ApiError> {
    s.catalog()
        .topic(name)
        .await?
        .ok_or_else(|| ApiError::UnknownTopic(name.to_string()))
}

/// Every partition's offsets and bytes (index fields left empty).
async fn partition_rows(s: &AdminState, t: &TopicRecord) -> Result<Vec<PartitionInfo>, ApiError> {
    let mut rows = Vec::with_capacity(t.partitions.max(0) as usize);
    for partition in 0..t.partitions {
        let (log_start_offset, high_watermark, bytes) =
            match s.catalog().partition_view(t.topic_id, partition).await? {
                Some(r) => (r.log_start_offset, r.next_offset, r.bytes),
                None => (0, 0, 0),
            };
        rows.push(PartitionInfo {
            partition,
            log_start_offset,
            high_watermark,
            records: (high_watermark - log_start_offset).max(0),
            bytes,
            index_entries: 0,
            last_append_ms: None,
        });
    }
    Ok(rows)
}

fn totals(rows: &[PartitionInfo]) -> (u64, i64) {
    rows.iter()
        .fold((0, 0), |(b, r), p| (b + p.bytes, r + p.records))
}
