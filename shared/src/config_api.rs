//! DescribeConfigs, AlterConfigs, IncrementalAlterConfigs and DescribeCluster.
//!
//! Topic configs live in the topic item; every check and every described value comes from
//! [`crate::topic_config`]. Alters are one conditional write on the topic item's version
//! ([`Catalog::update_topic_configs`]), so concurrent alters never lose an update. Errors are
//! per resource: an unknown topic is UNKNOWN_TOPIC_OR_PARTITION, a resource type other than
//! topic or broker is INVALID_REQUEST, a refused config is INVALID_CONFIG with the reason.
//! The broker resource describes the cluster-level defaults; it is read-only (they come from
//! flags), so altering it is refused with INVALID_REQUEST.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, BrokerId, DescribeClusterRequest,
    DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, alter_configs_response,
    incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;
use tracing::info;

use crate::catalog::CatalogError;
use crate::topic_api::{TopicApi, catalog_error_code};
use crate::topic_config::{
    AlterOp, ConfigError, ConfigSource, EffectiveConfig, apply_incremental, effective_configs,
    validate_configs,
};

/// Kafka's resource types (ConfigResource.Type).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// DescribeCluster's endpoint type asking for brokers (v1+; 2 asks for controllers).
const ENDPOINT_BROKERS: i8 = 1;

/// The cluster operations a client may be told it is allowed (no ACLs here: all of them):
/// ALTER, CLUSTER_ACTION, CREATE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
const CLUSTER_OPERATIONS: i32 =
    (1 << 7) | (1 << 9) | (1 << 5) | (1 << 8) | (1 << 10) | (1 << 11) | (1 << 12);

/// A per-resource refusal: error code and message.
type Refusal = (ResponseError, String);

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Why a config change was refused, as one error type for [`Catalog::update_topic_configs`].
#[derive(Debug)]
enum AlterError {
    Config(ConfigError),
    Catalog(CatalogError),
}

impl From<CatalogError> for AlterError {
    fn from(e: CatalogError) -> Self {
        AlterError::Catalog(e)
    }
}

impl From<ConfigError> for AlterError {
    fn from(e: ConfigError) -> Self {
        AlterError::Config(e)
    }
}

impl AlterError {
    fn refusal(self) -> Refusal {
        match self {
            AlterError::Config(e) => (ResponseError::InvalidConfig, e.0),
            AlterError::Catalog(e) => (catalog_error_code(&e), e.to_string()),
        }
    }
}

/// A change to a topic's configs: the new set from the current one.
type ConfigChange = Box<
    dyn Fn(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AlterError> + Send + Sync,
>;

impl TopicApi {
    /// DescribeConfigs v1-4.
    #[tracing::instrument(skip_all, fields(version = version, resources = request.resources.len()))]
    pub async fn describe_configs(
        &self,
        request: DescribeConfigsRequest,
        version: i16,
    ) -> DescribeConfigsResponse {
        let mut response = DescribeConfigsResponse::default();
        for resource in request.resources {
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let read_only = resource.resource_type == RESOURCE_BROKER;
            // Null or empty asks for every config (as Kafka's ConfigHelper reads it).
            let keys: Option<Vec<String>> = resource
                .configuration_keys
                .filter(|k| !k.is_empty())
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            match self
                .resource_configs(resource.resource_type, &resource.resource_name)
                .await
            {
                Ok(configs) => {
                    result.configs = configs
                        .iter()
                        .filter(|c| keys.as_ref().is_none_or(|k| k.iter().any(|n| n == c.0)))
                        .map(|(name, c)| {
                            describe_one(
                                name,
                                c,
                                read_only,
                                request.include_synonyms,
                                request.include_documentation,
                            )
                        })
                        .collect();
                }
                Err((code, message)) => {
                    result.error_code = code.code();
                    result.error_message = Some(text(message));
                }
            }
            response.results.push(result);
        }
        response
    }

    /// The described configs of a resource, by the name the resource knows them by.
    async fn resource_configs(
        &self,
        resource_type: i8,
        name: &str,
    ) -> Result<Vec<(&'static str, EffectiveConfig)>, Refusal> {
        match resource_type {
            RESOURCE_TOPIC => {
                // From the store: an alter acknowledged by another process must show.
                let topic = self
                    .catalog()
                    .topic_uncached(name)
                    .await
                    .map_err(|e| (catalog_error_code(&e), e.to_string()))?
                    .ok_or_else(|| {
                        (
                            ResponseError::UnknownTopicOrPartition,
                            format!("unknown topic {name}"),
                        )
                    })?;
                Ok(effective_configs(&topic.configs, self.cluster_defaults())
                    .into_iter()
                    .map(|c| (c.def.name, c))
                    .collect())
            }
            RESOURCE_BROKER => {
                self.check_broker_name(name)?;
                // The cluster defaults, under their broker-level names.
                Ok(effective_configs(&BTreeMap::new(), self.cluster_defaults())
                    .into_iter()
                    .map(|c| (c.def.broker_name, c))
                    .collect())
            }
            other => Err(unsupported_resource(other)),
        }
    }

    /// A broker resource names a broker id, or is empty for the cluster-wide defaults; every
    /// broker serves the same cluster, so any id is answered.
    fn check_broker_name(&self, name: &str) -> Result<(), Refusal> {
        if name.is_empty() || name.parse::<i32>().is_ok() {
            Ok(())
        } else {
            Err((
                ResponseError::InvalidRequest,
                format!("broker resource name {name:?} is not a broker id"),
            ))
        }
    }

    /// AlterConfigs v0-2: replaces each topic's whole config set.
    #[tracing::instrument(skip_all, fields(version = version, resources = request.resources.len()))]
    pub async fn alter_configs(
        &self,
        request: AlterConfigsRequest,
        version: i16,
    ) -> AlterConfigsResponse {
        let mut response = AlterConfigsResponse::default();
        for resource in request.resources {
            let configs: BTreeMap<String, String> = resource
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            let change: ConfigChange = Box::new(move |_| Ok(configs.clone()));
            let outcome = self
                .alter_resource(
                    resource.resource_type,
                    &resource.resource_name,
                    change,
                    request.validate_only,
                )
                .await;
            let mut result = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            if let Err((code, message)) = outcome {
                result.error_code = code.code();
                result.error_message = Some(text(message));
            }
            response.responses.push(result);
        }
        response
    }

    /// IncrementalAlterConfigs v0-1: SET, DELETE, and APPEND/SUBTRACT on list configs.
    #[tracing::instrument(skip_all, fields(version = version, resources = request.resources.len()))]
    pub async fn incremental_alter_configs(
        &self,
        request: IncrementalAlterConfigsRequest,
        version: i16,
    ) -> IncrementalAlterConfigsResponse {
        let mut response = IncrementalAlterConfigsResponse::default();
        for resource in request.resources {
            let outcome = match incremental_change(&resource.configs, self) {
                Ok(change) => {
                    self.alter_resource(
                        resource.resource_type,
                        &resource.resource_name,
                        change,
                        request.validate_only,
                    )
                    .await
                }
                Err(refusal) => Err(refusal),
            };
            let mut result =
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name);
            if let Err((code, message)) = outcome {
                result.error_code = code.code();
                result.error_message = Some(text(message));
            }
            response.responses.push(result);
        }
        response
    }

    /// Applies `change` to one resource's configs (validated; written unless `validate_only`).
    async fn alter_resource(
        &self,
        resource_type: i8,
        name: &str,
        change: ConfigChange,
        validate_only: bool,
    ) -> Result<(), Refusal> {
        match resource_type {
            RESOURCE_TOPIC => {}
            RESOURCE_BROKER => {
                self.check_broker_name(name)?;
                return Err((
                    ResponseError::InvalidRequest,
                    "broker configs are read-only: cluster defaults are set by flags".into(),
                ));
            }
            other => return Err(unsupported_resource(other)),
        }
        let checked = move |current: &BTreeMap<String, String>| {
            let next = change(current)?;
            validate_configs(&next)?;
            Ok::<_, AlterError>(next)
        };
        if validate_only {
            let topic = self
                .catalog()
                .topic_uncached(name)
                .await
                .map_err(|e| AlterError::from(e).refusal())?
                .ok_or_else(|| {
                    AlterError::from(CatalogError::UnknownTopic(name.into())).refusal()
                })?;
            return checked(&topic.configs)
                .map(drop)
                .map_err(AlterError::refusal);
        }
        let topic = self
            .catalog()
            .update_topic_configs(name, checked)
            .await
            .map_err(AlterError::refusal)?;
        info!(topic = %name, configs = ?topic.configs, "altered topic configs");
        Ok(())
    }

    /// DescribeCluster v0-2: this broker and the coordinators Metadata also lists.
    #[tracing::instrument(skip_all, fields(version = version))]
    pub async fn describe_cluster(
        &self,
        request: DescribeClusterRequest,
        version: i16,
    ) -> DescribeClusterResponse {
        let me = self.settings().broker();
        let mut response = DescribeClusterResponse::default()
            .with_cluster_id(text(self.settings().cluster_id.clone()))
            .with_controller_id(BrokerId(me.node_id))
            .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
                CLUSTER_OPERATIONS
            } else {
                i32::MIN
            });
        if version >= 1 {
            response.endpoint_type = request.endpoint_type;
            if request.endpoint_type != ENDPOINT_BROKERS {
                response.error_code = ResponseError::UnsupportedEndpointType.code();
                response.error_message = Some(text(
                    "only brokers are described: there are no separate controllers",
                ));
                return response;
            }
        }
        response.brokers = self
            .brokers()
            .into_iter()
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.node_id))
                    .with_host(text(b.host))
                    .with_port(b.port)
            })
            .collect();
        response
    }
}

fn unsupported_resource(resource_type: i8) -> Refusal {
    (
        ResponseError::InvalidRequest,
        format!("resource type {resource_type} is not supported; only topics (2) and brokers (4)"),
    )
}

/// The change an IncrementalAlterConfigs resource asks for; an unknown operation refuses the
/// whole resource with INVALID_REQUEST before anything is read.
fn incremental_change(
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
    api: &TopicApi,
) -> Result<ConfigChange, Refusal> {
    let mut ops = Vec::with_capacity(configs.len());
    for c in configs {
        let op = AlterOp::from_code(c.config_operation).ok_or_else(|| {
            (
                ResponseError::InvalidRequest,
                format!(
                    "unknown config operation {} for {}",
                    c.config_operation, c.name
                ),
            )
        })?;
        ops.push((
            c.name.to_string(),
            op,
            c.value.as_ref().map(|v| v.to_string()),
        ));
    }
    let cluster = api.cluster_defaults().clone();
    Ok(Box::new(move |current| {
        let mut next = current.clone();
        for (name, op, value) in &ops {
            apply_incremental(&mut next, &cluster, name, *op, value.as_deref())?;
        }
        Ok(next)
    }))
}

/// One described config, with synonyms (topic value, then the cluster default) and
/// documentation when asked for (clients only read them from the versions that carry them).
fn describe_one(
    name: &str,
    c: &EffectiveConfig,
    read_only: bool,
    include_synonyms: bool,
    include_documentation: bool,
) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default()
        .with_name(text(name))
        .with_value(Some(text(c.value.clone())))
        .with_read_only(read_only)
        .with_config_source(c.source as i8)
        .with_config_type(c.def.kind as i8)
        .with_documentation(include_documentation.then(|| text(c.def.doc)));
    if include_synonyms {
        if c.source == ConfigSource::TopicConfig {
            out.synonyms.push(
                DescribeConfigsSynonym::default()
                    .with_name(text(c.def.name))
                    .with_value(Some(text(c.value.clone())))
                    .with_source(ConfigSource::TopicConfig as i8),
            );
        }
        out.synonyms.push(
            DescribeConfigsSynonym::default()
                .with_name(text(c.def.broker_name))
                .with_value(Some(text(c.cluster.0.clone())))
                .with_source(c.cluster.1 as i8),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request as incremental;
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName, alter_configs_request};

    use super::*;
    use crate::catalog::Catalog;
    use crate::meta_store::MemoryMetaStore;
    use crate::topic_api::TopicSettings;
    use crate::topic_config::{ClusterDefaults, TOPIC_CONFIGS};

    const INVALID_CONFIG: i16 = 40;
    const INVALID_REQUEST: i16 = 42;
    const UNKNOWN_TOPIC: i16 = 3;

    fn api() -> TopicApi {
        let catalog = Arc::new(Catalog::new(Arc::new(MemoryMetaStore::default())));
        TopicApi::new(
            catalog,
            TopicSettings {
                advertised_host: "127.0.0.1".into(),
                advertised_port: 9092,
                auto_create_topics: false,
                default_partitions: 1,
                cluster_id: "test-cluster".into(),
                node_id: 7,
            },
        )
        .with_cluster_defaults(ClusterDefaults::default().with_max_message_bytes(2_000_000))
    }

    async fn create(
        api: &TopicApi,
        name: &str,
        configs: &[(&str, &str)],
        validate_only: bool,
    ) -> (i16, Option<String>) {
        let topic = CreatableTopic::default()
            .with_name(TopicName(text(name)))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(text(*k))
                            .with_value(Some(text(*v)))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_validate_only(validate_only);
        let r = &api.create_topics(request, 7).await.topics[0];
        (
            r.error_code,
            r.error_message.as_ref().map(|m| m.to_string()),
        )
    }

    async fn stored(api: &TopicApi, name: &str) -> BTreeMap<String, String> {
        api.catalog()
            .topic(name)
            .await
            .unwrap()
            .expect("topic")
            .configs
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    async fn describe(api: &TopicApi, kind: i8, name: &str, version: i16) -> DescribeConfigsResult {
        let request = DescribeConfigsRequest::default()
            .with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(kind)
                    .with_resource_name(text(name)),
            ])
            .with_include_synonyms(true)
            .with_include_documentation(true);
        api.describe_configs(request, version)
            .await
            .results
            .remove(0)
    }

    async fn incremental(
        api: &TopicApi,
        kind: i8,
        name: &str,
        ops: &[(&str, i8, Option<&str>)],
    ) -> (i16, Option<String>) {
        let resource = incremental::AlterConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(text(name))
            .with_configs(
                ops.iter()
                    .map(|(n, op, v)| {
                        incremental::AlterableConfig::default()
                            .with_name(text(*n))
                            .with_config_operation(*op)
                            .with_value(v.map(text))
                    })
                    .collect(),
            );
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
        let r = &api.incremental_alter_configs(request, 1).await.responses[0];
        (
            r.error_code,
            r.error_message.as_ref().map(|m| m.to_string()),
        )
    }

    #[tokio::test]
    async fn create_topics_stores_valid_configs_and_refuses_bad_ones() {
        let api = api();
        assert_eq!(
            create(
                &api,
                "t",
                &[("retention.ms", "1000"), ("segment.bytes", "1048576")],
                false
            )
            .await
            .0,
            0
        );
        assert_eq!(
            stored(&api, "t").await,
            map(&[("retention.ms", "1000"), ("segment.bytes", "1048576")])
        );
        let (code, message) = create(&api, "c", &[("cleanup.policy", "shrink")], false).await;
        assert_eq!(code, INVALID_CONFIG);
        assert!(message.unwrap().contains("unknown cleanup policy"));
        assert_eq!(
            create(&api, "u", &[("no.such", "1")], false).await.0,
            INVALID_CONFIG
        );
        assert_eq!(
            create(&api, "n", &[("retention.ms", "-7")], false).await.0,
            INVALID_CONFIG
        );
        for refused in ["c", "u", "n"] {
            assert!(
                api.catalog().topic(refused).await.unwrap().is_none(),
                "{refused}"
            );
        }
    }

    #[tokio::test]
    async fn create_topics_with_replica_assignments_counts_the_assignments() {
        use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
        let api = api();
        let topic = CreatableTopic::default()
            .with_name(TopicName(text("assigned")))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(
                (0..3)
                    .map(|p| {
                        CreatableReplicaAssignment::default()
                            .with_partition_index(p)
                            .with_broker_ids(vec![BrokerId(7)])
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default().with_topics(vec![topic]);
        assert_eq!(api.create_topics(request, 7).await.topics[0].error_code, 0);
        let created = api
            .catalog()
            .topic("assigned")
            .await
            .unwrap()
            .expect("topic");
        assert_eq!(created.partitions, 3);
    }

    #[tokio::test]
    async fn create_topics_validate_only_writes_nothing() {
        let api = api();
        assert_eq!(
            create(&api, "v", &[("retention.ms", "1000")], true).await.0,
            0
        );
        assert!(api.catalog().topic("v").await.unwrap().is_none());
        assert_eq!(
            create(&api, "v", &[("cleanup.policy", "shrink")], true)
                .await
                .0,
            INVALID_CONFIG
        );
    }

    #[tokio::test]
    async fn describe_topic_reports_values_sources_synonyms_and_docs() {
        let api = api();
        create(&api, "t", &[("retention.ms", "1000")], false).await;
        let r = describe(&api, RESOURCE_TOPIC, "t", 4).await;
        assert_eq!(r.error_code, 0);
        assert_eq!(r.configs.len(), TOPIC_CONFIGS.len());
        let get = |n: &str| {
            r.configs
                .iter()
                .find(|c| c.name.as_str() == n)
                .unwrap()
                .clone()
        };
        let retention = get("retention.ms");
        assert_eq!(retention.value.as_deref(), Some("1000"));
        assert_eq!(retention.config_source, ConfigSource::TopicConfig as i8);
        assert!(!retention.read_only);
        let synonyms: Vec<(String, i8)> = retention
            .synonyms
            .iter()
            .map(|s| (s.name.to_string(), s.source))
            .collect();
        assert_eq!(
            synonyms,
            vec![("retention.ms".into(), 1), ("log.retention.ms".into(), 5)]
        );
        assert!(
            retention
                .documentation
                .unwrap()
                .contains("-1 keeps them forever")
        );
        let max = get("max.message.bytes");
        assert_eq!(max.value.as_deref(), Some("2000000"));
        assert_eq!(max.config_source, ConfigSource::StaticBrokerConfig as i8);
        assert_eq!(get("cleanup.policy").config_type, 7);
    }

    #[tokio::test]
    async fn describe_errors_are_per_resource() {
        let api = api();
        assert_eq!(
            describe(&api, RESOURCE_TOPIC, "missing", 1)
                .await
                .error_code,
            UNKNOWN_TOPIC
        );
        assert_eq!(
            describe(&api, 32, "group", 1).await.error_code,
            INVALID_REQUEST
        );
        assert_eq!(
            describe(&api, RESOURCE_BROKER, "not-an-id", 1)
                .await
                .error_code,
            INVALID_REQUEST
        );
        let broker = describe(&api, RESOURCE_BROKER, "7", 2).await;
        assert_eq!(broker.error_code, 0);
        let names: Vec<&str> = broker.configs.iter().map(|c| c.name.as_str()).collect();
        assert!(names.contains(&"log.retention.ms") && names.contains(&"message.max.bytes"));
        assert!(broker.configs.iter().all(|c| c.read_only));
    }

    #[tokio::test]
    async fn alter_configs_replaces_the_whole_set() {
        let api = api();
        create(
            &api,
            "t",
            &[("retention.ms", "1000"), ("segment.ms", "5")],
            false,
        )
        .await;
        let alter = |configs: Vec<(&str, &str)>, validate_only: bool| {
            let resource = alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(text("t"))
                .with_configs(
                    configs
                        .into_iter()
                        .map(|(k, v)| {
                            alter_configs_request::AlterableConfig::default()
                                .with_name(text(k))
                                .with_value(Some(text(v)))
                        })
                        .collect(),
                );
            AlterConfigsRequest::default()
                .with_resources(vec![resource])
                .with_validate_only(validate_only)
        };
        let r = api
            .alter_configs(alter(vec![("retention.bytes", "100")], false), 2)
            .await;
        assert_eq!(r.responses[0].error_code, 0);
        assert_eq!(stored(&api, "t").await, map(&[("retention.bytes", "100")]));
        let r = api
            .alter_configs(alter(vec![("retention.ms", "7")], true), 2)
            .await;
        assert_eq!(r.responses[0].error_code, 0);
        assert_eq!(
            stored(&api, "t").await,
            map(&[("retention.bytes", "100")]),
            "validate_only wrote"
        );
        let r = api
            .alter_configs(
                alter(vec![("message.timestamp.type", "LogAppendTime")], false),
                0,
            )
            .await;
        assert_eq!(r.responses[0].error_code, INVALID_CONFIG);
        assert!(
            r.responses[0]
                .error_message
                .as_ref()
                .unwrap()
                .contains("LogAppendTime is not supported")
        );
        assert_eq!(stored(&api, "t").await, map(&[("retention.bytes", "100")]));
    }

    #[tokio::test]
    async fn incremental_alter_sets_deletes_and_refuses_per_kafka() {
        let api = api();
        create(&api, "t", &[("retention.ms", "1000")], false).await;
        let ok = incremental(
            &api,
            RESOURCE_TOPIC,
            "t",
            &[("retention.bytes", 0, Some("5")), ("retention.ms", 1, None)],
        )
        .await;
        assert_eq!(ok.0, 0);
        assert_eq!(stored(&api, "t").await, map(&[("retention.bytes", "5")]));
        // (resource type, name, config, operation, value) and the error Kafka answers.
        type Refusal = (
            i8,
            &'static str,
            &'static str,
            i8,
            Option<&'static str>,
            i16,
        );
        let refused: [Refusal; 6] = [
            (
                RESOURCE_TOPIC,
                "t",
                "retention.ms",
                2,
                Some("1"),
                INVALID_CONFIG,
            ),
            (
                RESOURCE_TOPIC,
                "t",
                "retention.ms",
                9,
                Some("1"),
                INVALID_REQUEST,
            ),
            (
                RESOURCE_TOPIC,
                "t",
                "cleanup.policy",
                2,
                Some("shrink"),
                INVALID_CONFIG,
            ),
            (RESOURCE_TOPIC, "t", "bogus", 0, Some("1"), INVALID_CONFIG),
            (
                RESOURCE_TOPIC,
                "missing",
                "retention.ms",
                0,
                Some("1"),
                UNKNOWN_TOPIC,
            ),
            (
                RESOURCE_BROKER,
                "7",
                "retention.ms",
                0,
                Some("1"),
                INVALID_REQUEST,
            ),
        ];
        for (kind, name, config, op, value, want) in refused {
            let got = incremental(&api, kind, name, &[(config, op, value)])
                .await
                .0;
            assert_eq!(got, want, "{kind} {name} {config} op {op}");
        }
        assert_eq!(incremental(&api, 16, "x", &[]).await.0, INVALID_REQUEST);
        assert_eq!(stored(&api, "t").await, map(&[("retention.bytes", "5")]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_incremental_alters_lose_no_update() {
        let api = api();
        create(&api, "t", &[], false).await;
        let names: [&'static str; 10] = [
            "retention.ms",
            "retention.bytes",
            "segment.bytes",
            "segment.ms",
            "flush.ms",
            "flush.messages",
            "index.interval.bytes",
            "file.delete.delay.ms",
            "min.insync.replicas",
            "max.message.bytes",
        ];
        let tasks: Vec<_> = names
            .into_iter()
            .map(|n| {
                let api = api.clone();
                tokio::spawn(async move {
                    incremental(&api, RESOURCE_TOPIC, "t", &[(n, 0, Some("12345"))])
                        .await
                        .0
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 0);
        }
        let configs = stored(&api, "t").await;
        assert_eq!(configs.len(), names.len(), "{configs:?}");
    }

    #[tokio::test]
    async fn describe_cluster_names_this_broker_and_refuses_controllers() {
        let api = api();
        for v in 0..=2 {
            let r = api
                .describe_cluster(DescribeClusterRequest::default().with_endpoint_type(1), v)
                .await;
            assert_eq!(r.error_code, 0);
            assert_eq!(r.cluster_id.as_str(), "test-cluster");
            assert_eq!(r.controller_id, BrokerId(7));
            assert_eq!(r.brokers.len(), 1);
            assert_eq!(
                (r.brokers[0].host.as_str(), r.brokers[0].port),
                ("127.0.0.1", 9092)
            );
            assert_eq!(r.cluster_authorized_operations, i32::MIN);
        }
        let r = api
            .describe_cluster(DescribeClusterRequest::default().with_endpoint_type(2), 1)
            .await;
        assert_eq!(r.error_code, ResponseError::UnsupportedEndpointType.code());
    }
}
