//! The enforcing layer against a recording handler: what is forwarded, what is answered here.

use std::sync::Mutex;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    GroupId, InitProducerIdRequest, JoinGroupRequest, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_acl::{AclBinding, Operation, PatternType, Permission, ResourceType, SuperUsers};

use super::*;
use crate::authz::{AclCache, AclStore};
use crate::meta_store::MemoryMetaStore;

/// Answers Produce and Metadata with NONE for what it is asked, records every request.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<RequestKind>>,
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

#[async_trait::async_trait]
impl KafkaHandler for Recorder {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        Vec::new()
    }

    async fn start(&self, _ctx: RequestContext, request: RequestKind) -> Dispatch {
        self.seen.lock().unwrap().push(request.clone());
        match request {
            RequestKind::Produce(r) => {
                let mut response = ProduceResponse::default();
                for t in r.topic_data {
                    let mut topic = TopicProduceResponse::default();
                    topic.name = t.name;
                    topic.partition_responses = vec![PartitionProduceResponse::default()];
                    response.responses.push(topic);
                }
                Dispatch::ready(response)
            }
            RequestKind::Metadata(_) => {
                let mut response = MetadataResponse::default();
                for n in ["orders", "secret"] {
                    let mut topic = MetadataResponseTopic::default();
                    topic.name = Some(name(n));
                    response.topics.push(topic);
                }
                Dispatch::ready(response)
            }
            _ => Dispatch::ready(kafka_protocol::messages::InitProducerIdResponse::default()),
        }
    }
}

fn acl(resource_type: ResourceType, name: &str, operation: Operation) -> AclBinding {
    AclBinding {
        resource_type,
        resource_name: name.into(),
        pattern: PatternType::Literal,
        principal: "User:alice".into(),
        host: "*".into(),
        operation,
        permission: Permission::Allow,
    }
}

async fn layer(bindings: Vec<AclBinding>) -> (AuthorizingHandler, Arc<Recorder>) {
    let meta = Arc::new(MemoryMetaStore::new());
    let store = AclStore::new(meta.clone());
    store.create(&bindings).await.unwrap();
    let cache = AclCache::load(store).await.unwrap();
    let authorizer = Arc::new(Authorizer::new(
        cache,
        SuperUsers::parse("User:admin").unwrap(),
    ));
    let recorder = Arc::new(Recorder::default());
    let handler = AuthorizingHandler::new(
        recorder.clone(),
        authorizer,
        Arc::new(Catalog::new(meta)),
        true,
    );
    (handler, recorder)
}

fn ctx(api_key: ApiKey, version: i16, principal: Option<&str>) -> RequestContext {
    RequestContext {
        api_key,
        api_version: version,
        correlation_id: 1,
        client_id: None,
        peer: "127.0.0.1:5000".parse().unwrap(),
        connection_id: 1,
        principal: principal.map(Arc::from),
        record_splices: Default::default(),
    }
}

async fn answer(dispatch: Dispatch) -> ResponseKind {
    match dispatch {
        Dispatch::Respond(f) => f.await.unwrap(),
        Dispatch::NoResponse(_) => panic!("expected an answer"),
    }
}

fn produce_of(topics: &[&str]) -> RequestKind {
    let mut r = ProduceRequest::default();
    r.acks = -1;
    r.topic_data = topics
        .iter()
        .map(|t| {
            let mut data = TopicProduceData::default();
            data.name = name(t);
            data.partition_data = vec![PartitionProduceData::default()];
            data
        })
        .collect();
    r.into()
}

fn produce_errors(response: ResponseKind) -> Vec<(String, i16)> {
    let ResponseKind::Produce(p) = response else {
        panic!("not a produce response")
    };
    let mut out: Vec<_> = p
        .responses
        .iter()
        .map(|t| (t.name.0.to_string(), t.partition_responses[0].error_code))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn produce_forwards_what_is_allowed_and_refuses_the_rest() {
    let (handler, recorder) =
        layer(vec![acl(ResourceType::Topic, "orders", Operation::Write)]).await;
    let dispatch = handler
        .start(
            ctx(ApiKey::Produce, 9, Some("User:alice")),
            produce_of(&["orders", "secret"]),
        )
        .await;
    let errors = produce_errors(answer(dispatch).await);
    assert_eq!(errors, [("orders".into(), 0), ("secret".into(), 29)]);
    let seen = recorder.seen.lock().unwrap().clone();
    let [RequestKind::Produce(forwarded)] = seen.as_slice() else {
        panic!("{seen:?}")
    };
    assert_eq!(forwarded.topic_data.len(), 1);
    assert_eq!(forwarded.topic_data[0].name, name("orders"));
}

#[tokio::test]
async fn anonymous_gets_nothing_and_super_users_everything() {
    let (handler, recorder) =
        layer(vec![acl(ResourceType::Topic, "orders", Operation::Write)]).await;
    let refused = handler
        .start(ctx(ApiKey::Produce, 9, None), produce_of(&["orders"]))
        .await;
    assert_eq!(
        produce_errors(answer(refused).await),
        [("orders".into(), 29)]
    );
    assert!(
        recorder.seen.lock().unwrap().is_empty(),
        "nothing forwarded"
    );

    let admin = handler
        .start(
            ctx(ApiKey::Produce, 9, Some("User:admin")),
            produce_of(&["orders", "secret"]),
        )
        .await;
    assert_eq!(
        produce_errors(answer(admin).await),
        [("orders".into(), 0), ("secret".into(), 0)]
    );
}

#[tokio::test]
async fn metadata_lists_only_describable_topics() {
    let (handler, _) = layer(vec![acl(ResourceType::Topic, "orders", Operation::Read)]).await;
    let mut every_topic = MetadataRequest::default();
    every_topic.topics = None;
    let all = handler
        .start(
            ctx(ApiKey::Metadata, 12, Some("User:alice")),
            every_topic.into(),
        )
        .await;
    let ResponseKind::Metadata(m) = answer(all).await else {
        panic!()
    };
    let names: Vec<_> = m.topics.iter().map(|t| t.name.clone().unwrap()).collect();
    assert_eq!(names, [name("orders")]);

    let mut named = MetadataRequest::default();
    let mut topic = MetadataRequestTopic::default();
    topic.name = Some(name("secret"));
    named.topics = Some(vec![topic]);
    let dispatch = handler
        .start(ctx(ApiKey::Metadata, 12, Some("User:alice")), named.into())
        .await;
    let ResponseKind::Metadata(m) = answer(dispatch).await else {
        panic!()
    };
    let secret: Vec<_> = m
        .topics
        .iter()
        .filter(|t| t.name == Some(name("secret")))
        .map(|t| t.error_code)
        .collect();
    assert_eq!(
        secret,
        [29],
        "refused, and the handler's own answer replaced"
    );
}

#[tokio::test]
async fn idempotent_producers_need_write_on_some_topic_and_groups_read() {
    let (handler, _) = layer(vec![acl(ResourceType::Topic, "orders", Operation::Write)]).await;
    let init = |who: &'static str| {
        handler.start(ctx(ApiKey::InitProducerId, 4, Some(who)), {
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = None;
            r.into()
        })
    };
    let ResponseKind::InitProducerId(ok) = answer(init("User:alice").await).await else {
        panic!()
    };
    assert_eq!(ok.error_code, 0);
    let ResponseKind::InitProducerId(refused) = answer(init("User:bob").await).await else {
        panic!()
    };
    assert_eq!(refused.error_code, 31);

    let mut join = JoinGroupRequest::default();
    join.group_id = GroupId(StrBytes::from_static_str("g"));
    let dispatch = handler
        .start(ctx(ApiKey::JoinGroup, 5, Some("User:alice")), join.into())
        .await;
    let ResponseKind::JoinGroup(j) = answer(dispatch).await else {
        panic!()
    };
    assert_eq!(j.error_code, 30);
}
