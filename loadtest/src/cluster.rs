//! The topic under test: created if missing, its partitions' leaders, and the offsets at which
//! this run's records will start (consumers read from there).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::connection::KafkaConnection;
use crate::error::LoadtestError;

pub(crate) const METADATA_V: i16 = 9;
const CREATE_TOPICS_V: i16 = 5;
const LIST_OFFSETS_V: i16 = 5;

/// Where each partition of the topic lives, with one shared connection per broker for
/// metadata-like calls.
pub(crate) struct TopicLayout {
    pub(crate) topic: String,
    /// Leader address of each partition (index = partition).
    pub(crate) leaders: Vec<String>,
}

pub(crate) fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Looks the topic up, creating it with `partitions` if it does not exist.
pub(crate) async fn prepare_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<TopicLayout, LoadtestError> {
    let conn = KafkaConnection::connect(bootstrap).await?;
    for attempt in 0..50 {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
            ]))
            .with_allow_auto_topic_creation(false);
        let md = conn.call(METADATA_V, &request).await?;
        let brokers: HashMap<BrokerId, String> = md
            .brokers
            .iter()
            .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
            .collect();
        let t = md
            .topics
            .first()
            .ok_or_else(|| LoadtestError::Protocol("metadata without the topic".into()))?;
        match ResponseError::try_from_code(t.error_code) {
            None if !t.partitions.is_empty() => {
                let mut leaders = vec![String::new(); t.partitions.len()];
                for p in &t.partitions {
                    let addr = brokers.get(&p.leader_id).cloned().ok_or_else(|| {
                        LoadtestError::Protocol(format!(
                            "partition {} has no known leader",
                            p.partition_index
                        ))
                    })?;
                    let slot = leaders.get_mut(p.partition_index as usize).ok_or_else(|| {
                        LoadtestError::Protocol("partition index out of range".into())
                    })?;
                    *slot = addr;
                }
                if t.partitions.len() as i32 != partitions {
                    info!(
                        topic,
                        existing = t.partitions.len(),
                        asked = partitions,
                        "topic exists; using its partitions"
                    );
                }
                return Ok(TopicLayout {
                    topic: topic.to_string(),
                    leaders,
                });
            }
            Some(ResponseError::UnknownTopicOrPartition) | None if attempt == 0 => {
                create_topic(&conn, topic, partitions).await?;
            }
            Some(ResponseError::UnknownTopicOrPartition)
            | Some(ResponseError::LeaderNotAvailable)
            | None => {}
            Some(e) => return Err(LoadtestError::refused(e, format!("metadata of {topic}"))),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(LoadtestError::Kafka(format!(
        "topic {topic} did not appear"
    )))
}

async fn create_topic(
    conn: &KafkaConnection,
    topic: &str,
    partitions: i32,
) -> Result<(), LoadtestError> {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(-1),
        ])
        .with_timeout_ms(30_000);
    let response = conn.call(CREATE_TOPICS_V, &request).await?;
    let code = response.topics.first().map(|t| t.error_code).unwrap_or(0);
    match ResponseError::try_from_code(code) {
        None | Some(ResponseError::TopicAlreadyExists) => Ok(()),
        Some(e) => Err(LoadtestError::refused(e, format!("creating {topic}"))),
    }
}

/// Connections shared by address.
#[derive(Default)]
pub(crate) struct Connections {
    open: Mutex<HashMap<String, Arc<KafkaConnection>>>,
}

impl Connections {
    pub(crate) async fn get(&self, addr: &str) -> Result<Arc<KafkaConnection>, LoadtestError> {
        let mut open = self.open.lock().await;
        // A connection the server closed (a restarted gateway) is replaced, as real clients
        // reconnect: otherwise every later request on it fails and its records look lost.
        if let Some(c) = open.get(addr)
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let c = Arc::new(KafkaConnection::connect(addr).await?);
        open.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

/// The log end offset of every partition (where this run's records will start).
pub(crate) async fn end_offsets(layout: &TopicLayout) -> Result<Vec<i64>, LoadtestError> {
    let conns = Connections::default();
    let mut out = Vec::with_capacity(layout.leaders.len());
    for (p, leader) in layout.leaders.iter().enumerate() {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic_name(&layout.topic))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(p as i32)
                            .with_timestamp(-1),
                    ]),
            ]);
        let response = conns
            .get(leader)
            .await?
            .call(LIST_OFFSETS_V, &request)
            .await?;
        let part = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| LoadtestError::Protocol("empty ListOffsets answer".into()))?;
        if let Some(e) = ResponseError::try_from_code(part.error_code) {
            return Err(LoadtestError::refused(
                e,
                format!("ListOffsets of partition {p}"),
            ));
        }
        out.push(part.offset);
    }
    Ok(out)
}

/// The topic's layout and where this run's records start, retrying transient failures (a
/// gateway restarting, a store outage) until `give_up_after` has passed: a run started in
/// the middle of a chaos test must not fail before it began.
pub(crate) async fn prepare_run(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    give_up_after: Duration,
) -> Result<(TopicLayout, Vec<i64>), LoadtestError> {
    let deadline = tokio::time::Instant::now() + give_up_after;
    loop {
        let attempt = async {
            let layout = prepare_topic(bootstrap, topic, partitions).await?;
            let starts = end_offsets(&layout).await?;
            Ok::<_, LoadtestError>((layout, starts))
        };
        match attempt.await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                warn!(error = %e, "setting the run up failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}
