//! Metadata, CreateTopics and DeleteTopics: the topic APIs every gateway serves.
//!
//! They only touch the metadata store. Metadata names this process's advertised address as
//! the one broker and the leader of every partition: tiers are leaderless, so in a cluster the
//! advertised address is a load-balanced Service and any replica can serve any partition.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{info, warn};
use uuid::Uuid;

use crate::catalog::{Catalog, CatalogError, TopicRecord, validate_topic_name};
use crate::listener_addresses::{ListenerAddressBook, ListenerMap};
use crate::topic_config::{ClusterDefaults, effective_configs, validate_configs};

/// The node id of the process advertised at `addr` ("host:port").
///
/// Every Kafka-serving process is a broker of its own to clients: it leads every partition in
/// its own Metadata answers, and a group coordinator elsewhere must have another id (clients
/// key connections by node id). Deriving the id from the advertised address gives each
/// replica a stable, distinct id without any registration, and lets a process name another
/// one's id from the address in that one's lease.
pub fn node_id_for_addr(addr: &str) -> i32 {
    // 31 bits, never negative (-1 means "no node" in the protocol).
    (crc32c::crc32c(addr.as_bytes()) & 0x7fff_ffff) as i32
}

/// A broker as Metadata and FindCoordinator name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

impl BrokerAddr {
    /// Parses an advertised "host:port" (the node id follows from it).
    pub fn from_advertised(addr: &str) -> Option<BrokerAddr> {
        let (host, port) = addr.rsplit_once(':')?;
        Some(BrokerAddr {
            node_id: node_id_for_addr(addr),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: port.parse().ok()?,
        })
    }
}

/// Settings for topic handling.
#[derive(Debug, Clone)]
pub struct TopicSettings {
    /// Host and port clients should connect to (the advertised address).
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Create unknown topics on Metadata/Produce requests that allow it.
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics requests that ask for the default.
    pub default_partitions: i32,
    /// Reported in Metadata v2+.
    pub cluster_id: String,
    /// This process's node id (see [`node_id_for_addr`]).
    pub node_id: i32,
}

impl TopicSettings {
    /// This process as a broker.
    pub fn broker(&self) -> BrokerAddr {
        BrokerAddr {
            node_id: self.node_id,
            host: self.advertised_host.clone(),
            port: self.advertised_port,
        }
    }
}

/// Serves the topic APIs from the catalog.
#[derive(Debug, Clone)]
pub struct TopicApi {
    catalog: Arc<Catalog>,
    settings: TopicSettings,
    /// Other brokers clients must keep knowing about: the group coordinators (a client that
    /// finds its coordinator elsewhere must not see it vanish from Metadata answers).
    peers: Arc<RwLock<Vec<BrokerAddr>>>,
    /// The cluster-level value of every topic config not set on the topic.
    cluster_defaults: ClusterDefaults,
    /// This broker's named listeners (name → advertised `host:port`; empty with one unnamed
    /// listener), published in its leases.
    listeners: ListenerMap,
    /// Every known broker's addresses per listener, this one's included (see
    /// [`crate::listener_addresses`]).
    listener_addresses: Arc<ListenerAddressBook>,
}

fn name_of(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Maps catalog errors onto Kafka error codes (one place, no catch-all).
pub fn catalog_error_code(e: &CatalogError) -> ResponseError {
    match e {
        CatalogError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        CatalogError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        CatalogError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        CatalogError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        CatalogError::Contention(_) => ResponseError::RequestTimedOut,
        CatalogError::Store(_) => ResponseError::KafkaStorageError,
    }
}

impl TopicApi {
    pub fn new(catalog: Arc<Catalog>, settings: TopicSettings) -> Self {
        TopicApi {
            catalog,
            settings,
            peers: Arc::default(),
            cluster_defaults: ClusterDefaults::default(),
            listeners: ListenerMap::new(),
            listener_addresses: Arc::default(),
        }
    }

    /// Names this broker's listeners (name → advertised `host:port`, the primary one
    /// included) and records them in the address book.
    pub fn with_listeners(mut self, listeners: ListenerMap) -> Self {
        self.listener_addresses
            .record_node(self.settings.node_id, &listeners);
        self.listeners = listeners;
        self
    }

    /// This broker's named listeners (empty with one unnamed listener).
    pub fn listeners(&self) -> &ListenerMap {
        &self.listeners
    }

    /// Every known broker's addresses per listener.
    pub fn listener_addresses(&self) -> &Arc<ListenerAddressBook> {
        &self.listener_addresses
    }

    /// Sets the cluster-level topic config defaults (from flags).
    pub fn with_cluster_defaults(mut self, defaults: ClusterDefaults) -> Self {
        self.cluster_defaults = defaults;
        self
    }

    /// The same API, never creating a topic on first use (Produce when ACLs are enforced).
    pub fn without_auto_create(mut self) -> Self {
        self.settings.auto_create_topics = false;
        self
    }

    /// The cluster-level topic config defaults.
    pub fn cluster_defaults(&self) -> &ClusterDefaults {
        &self.cluster_defaults
    }

    /// This broker and its peers, each once (Metadata and DescribeCluster list them).
    pub fn brokers(&self) -> Vec<BrokerAddr> {
        let mut brokers = vec![self.settings.broker()];
        for peer in self.peers.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if !brokers.iter().any(|b| b.node_id == peer.node_id) {
                brokers.push(peer.clone());
            }
        }
        brokers
    }

    /// Sets the other brokers Metadata lists besides this one.
    pub fn set_peers(&self, peers: Vec<BrokerAddr>) {
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = peers;
    }

    pub fn settings(&self) -> &TopicSettings {
        &self.settings
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Looks a topic up, creating it with the default partition count when allowed.
    pub async fn resolve_or_create(
        &self,
        name: &str,
        allow_create: bool,
    ) -> Result<TopicRecord, CatalogError> {
        if let Some(t) = self.catalog.topic_strict(name).await? {
            return Ok(t);
        }
        if !(allow_create && self.settings.auto_create_topics) {
            return Err(CatalogError::UnknownTopic(name.to_string()));
        }
        match self
            .catalog
            .create_topic(name, self.settings.default_partitions, BTreeMap::new())
            .await
        {
            Ok(t) => {
                info!(
                    topic = name,
                    partitions = t.partitions,
                    "auto-created topic"
                );
                Ok(t)
            }
            Err(CatalogError::TopicExists(_)) => {
                self.catalog.invalidate_topics();
                self.catalog
                    .topic(name)
                    .await?
                    .ok_or_else(|| CatalogError::UnknownTopic(name.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    fn topic_metadata(&self, t: &TopicRecord) -> MetadataResponseTopic {
        let me = BrokerId(self.settings.node_id);
        let mut out = MetadataResponseTopic::default();
        out.name = Some(name_of(&t.name));
        out.topic_id = t.topic_id;
        out.partitions = (0..t.partitions)
            .map(|p| {
                let mut m = MetadataResponsePartition::default();
                m.partition_index = p;
                m.leader_id = me;
                m.leader_epoch = 0;
                m.replica_nodes = vec![me];
                m.isr_nodes = vec![me];
                m
            })
            .collect();
        out
    }

    fn topic_error(
        name: Option<&str>,
        topic_id: Uuid,
        error: ResponseError,
    ) -> MetadataResponseTopic {
        let mut out = MetadataResponseTopic::default();
        out.name = name.map(name_of);
        out.topic_id = topic_id;
        out.error_code = error.code();
        out
    }

    pub async fn metadata(&self, request: MetadataRequest, version: i16) -> MetadataResponse {
        let mut response = MetadataResponse::default();
        let me = self.settings.broker();
        response.brokers = self
            .brokers()
            .into_iter()
            .map(|b| {
                let mut broker = MetadataResponseBroker::default();
                broker.node_id = BrokerId(b.node_id);
                broker.host = StrBytes::from_string(b.host);
                broker.port = b.port;
                broker
            })
            .collect();
        response.cluster_id = Some(StrBytes::from_string(self.settings.cluster_id.clone()));
        response.controller_id = BrokerId(me.node_id);
        // v0 asks for all topics with an empty list; v1+ with a null list.
        let requested = match request.topics {
            None => None,
            Some(list) if list.is_empty() && version == 0 => None,
            Some(list) => Some(list),
        };
        let allow_create = version < 4 || request.allow_auto_topic_creation;
        match requested {
            None => match self.catalog.list_topics().await {
                Ok(topics) => {
                    response.topics = topics.iter().map(|t| self.topic_metadata(t)).collect()
                }
                Err(e) => warn!(error = %e, "metadata: listing topics failed"),
            },
            Some(list) => {
                for t in list {
                    let entry = match t.name {
                        Some(name) => {
                            let name = name.0.as_str();
                            if validate_topic_name(name).is_err() {
                                Self::topic_error(
                                    Some(name),
                                    Uuid::nil(),
                                    ResponseError::InvalidTopicException,
                                )
                            } else {
                                match self.resolve_or_create(name, allow_create).await {
                                    Ok(topic) => self.topic_metadata(&topic),
                                    Err(e) => Self::topic_error(
                                        Some(name),
                                        Uuid::nil(),
                                        catalog_error_code(&e),
                                    ),
                                }
                            }
                        }
                        None => match self.catalog.topic_by_id(t.topic_id).await {
                            Ok(Some(topic)) => self.topic_metadata(&topic),
                            Ok(None) => {
                                Self::topic_error(None, t.topic_id, ResponseError::UnknownTopicId)
                            }
                            Err(e) => Self::topic_error(None, t.topic_id, catalog_error_code(&e)),
                        },
                    };
                    response.topics.push(entry);
                }
            }
        }
        response
    }

    pub async fn create_topics(
        &self,
        request: CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let mut response = CreateTopicsResponse::default();
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let mut result = CreatableTopicResult::default();
            result.name = topic.name.clone();
            // With replica assignments, num_partitions is -1 and the assignments count.
            let partitions = if !topic.assignments.is_empty() {
                topic.assignments.len() as i32
            } else if topic.num_partitions == -1 {
                self.settings.default_partitions
            } else {
                topic.num_partitions
            };
            let mut configs = BTreeMap::new();
            for c in &topic.configs {
                if let Some(v) = &c.value {
                    configs.insert(c.name.to_string(), v.to_string());
                }
            }
            let outcome = if let Err(e) = validate_configs(&configs) {
                Err((ResponseError::InvalidConfig, e.0))
            } else if topic.replication_factor == 0 || topic.replication_factor < -1 {
                Err((
                    ResponseError::InvalidReplicationFactor,
                    "replication factor must be -1 or at least 1".to_string(),
                ))
            } else if let Err(e) = validate_topic_name(&name) {
                Err((catalog_error_code(&e), e.to_string()))
            } else if request.validate_only {
                if !(1..=100_000).contains(&partitions) {
                    Err((
                        ResponseError::InvalidPartitions,
                        format!("invalid partition count {partitions}"),
                    ))
                } else {
                    match self.catalog.topic(&name).await {
                        Ok(Some(_)) => Err((
                            ResponseError::TopicAlreadyExists,
                            format!("topic {name} already exists"),
                        )),
                        Ok(None) => Ok(None),
                        Err(e) => Err((catalog_error_code(&e), e.to_string())),
                    }
                }
            } else {
                match self
                    .catalog
                    .create_topic(&name, partitions, configs.clone())
                    .await
                {
                    Ok(t) => {
                        info!(topic = %name, partitions, "created topic");
                        Ok(Some(t))
                    }
                    Err(e) => Err((catalog_error_code(&e), e.to_string())),
                }
            };
            match outcome {
                Ok(created) => {
                    if let Some(t) = created {
                        result.topic_id = t.topic_id;
                    }
                    if version >= 5 {
                        result.num_partitions = partitions;
                        result.replication_factor = 1;
                        result.configs = Some(self.created_configs(&configs));
                    }
                }
                Err((code, message)) => {
                    result.error_code = code.code();
                    result.error_message = Some(StrBytes::from_string(message));
                    if version >= 5 {
                        result.num_partitions = -1;
                        result.replication_factor = -1;
                    }
                }
            }
            response.topics.push(result);
        }
        response
    }

    /// The configs CreateTopics v5+ reports for a new topic: every config, set or default.
    fn created_configs(&self, stored: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
        effective_configs(stored, &self.cluster_defaults)
            .into_iter()
            .map(|c| {
                CreatableTopicConfigs::default()
                    .with_name(StrBytes::from_static_str(c.def.name))
                    .with_value(Some(StrBytes::from_string(c.value)))
                    .with_config_source(c.source as i8)
            })
            .collect()
    }

    pub async fn delete_topics(
        &self,
        request: DeleteTopicsRequest,
        version: i16,
    ) -> DeleteTopicsResponse {
        let mut response = DeleteTopicsResponse::default();
        // v0-5 list names; v6+ lists (name or id) states.
        let mut targets: Vec<(Option<String>, Uuid)> = request
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect();
        targets.extend(
            request
                .topics
                .iter()
                .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
        );
        for (name, topic_id) in targets {
            let mut result = DeletableTopicResult::default();
            let resolved = match &name {
                Some(n) => Ok(n.clone()),
                None => match self.catalog.topic_by_id(topic_id).await {
                    Ok(Some(t)) => Ok(t.name),
                    Ok(None) => Err(ResponseError::UnknownTopicId),
                    Err(e) => Err(catalog_error_code(&e)),
                },
            };
            match resolved {
                Ok(n) => {
                    result.name = Some(name_of(&n));
                    match self.catalog.delete_topic(&n).await {
                        Ok(t) => {
                            info!(topic = %n, "deleted topic");
                            if version >= 6 {
                                result.topic_id = t.topic_id;
                            }
                        }
                        Err(e) => {
                            result.error_code = catalog_error_code(&e).code();
                            if version >= 5 {
                                result.error_message = Some(StrBytes::from_string(e.to_string()));
                            }
                        }
                    }
                }
                Err(code) => {
                    result.topic_id = topic_id;
                    result.error_code = code.code();
                }
            }
            response.responses.push(result);
        }
        response
    }

    /// CreatePartitions: raises each topic's partition count. Replica assignments are refused
    /// (there are no replicas to place); `validate_only` checks without writing.
    pub async fn create_partitions(
        &self,
        request: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let mut response = CreatePartitionsResponse::default();
        for topic in request.topics {
            let name = topic.name.0.to_string();
            let outcome = self
                .add_partitions(
                    &name,
                    topic.count,
                    topic.assignments.as_ref().is_some_and(|a| !a.is_empty()),
                    request.validate_only,
                )
                .await;
            let mut result = CreatePartitionsTopicResult::default();
            result.name = topic.name;
            if let Err((code, message)) = outcome {
                result.error_code = code.code();
                result.error_message = Some(StrBytes::from_string(message));
            }
            response.results.push(result);
        }
        response
    }

    async fn add_partitions(
        &self,
        name: &str,
        count: i32,
        with_assignments: bool,
        validate_only: bool,
    ) -> Result<(), (ResponseError, String)> {
        let refuse = |e: CatalogError| (catalog_error_code(&e), e.to_string());
        if with_assignments {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                "replica assignments are not supported: the object store holds every replica"
                    .to_string(),
            ));
        }
        if !validate_only {
            let t = self
                .catalog
                .add_partitions(name, count)
                .await
                .map_err(refuse)?;
            info!(topic = %name, partitions = t.partitions, "added partitions");
            return Ok(());
        }
        match self.catalog.topic(name).await.map_err(refuse)? {
            None => Err(refuse(CatalogError::UnknownTopic(name.to_string()))),
            Some(t) if count <= t.partitions || count > 100_000 => Err((
                ResponseError::InvalidPartitions,
                format!(
                    "topic {name} has {} partitions; asked for {count}",
                    t.partitions
                ),
            )),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta_store::MemoryMetaStore;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;

    fn gateway(store: &Arc<MemoryMetaStore>, node_id: i32) -> TopicApi {
        let settings = TopicSettings {
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092 + node_id,
            auto_create_topics: false,
            default_partitions: 1,
            cluster_id: "test".into(),
            node_id,
        };
        TopicApi::new(Arc::new(Catalog::new(store.clone())), settings)
    }

    fn ask(topic: &str) -> MetadataRequest {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name_of(topic))),
            ]))
            .with_allow_auto_topic_creation(false)
    }

    /// A client that bootstraps from another gateway right after a create must see the topic:
    /// librdkafka, told a subscribed topic is missing, postpones its group join until its next
    /// periodic refresh (5 minutes by default).
    #[tokio::test]
    async fn metadata_sees_a_topic_created_on_another_gateway_at_once() {
        let store = Arc::new(MemoryMetaStore::new());
        let (ingest, fetch) = (gateway(&store, 1), gateway(&store, 2));
        // The fetch gateway's cache has just been loaded without the topic.
        let before = fetch.metadata(ask("fresh"), 12).await;
        assert_eq!(
            before.topics[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        let created = ingest
            .catalog()
            .create_topic("fresh", 3, BTreeMap::new())
            .await
            .expect("create");
        let after = fetch.metadata(ask("fresh"), 12).await;
        assert_eq!(after.topics[0].error_code, 0);
        assert_eq!(after.topics[0].topic_id, created.topic_id);
        assert_eq!(after.topics[0].partitions.len(), 3);
        // What Metadata showed, the cache now knows: a Produce that follows finds it too.
        let cached = fetch.catalog().topic("fresh").await.expect("lookup");
        assert_eq!(cached.map(|t| t.topic_id), Some(created.topic_id));
    }
}
