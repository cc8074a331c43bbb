//! The one place requests are authorized: [`AuthorizingHandler`] wraps a tier's handler (the
//! router of every API) and decides each request before the handler sees it.
//!
//! Why a wrapper rather than checks inside each handler: the handlers stay as they are (and
//! identical with the authorizer off), every API's rule is in one table ([`plan`]), and the
//! same check serves standalone and both gateways. Per API it does what Kafka's `KafkaApis`
//! does: the resources a request may not touch are taken out of it and answered with the
//! authorization error Kafka uses for them (TOPIC_, GROUP_, CLUSTER_ or
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED), the rest is forwarded, and the two answers are
//! merged; listings (Metadata of all topics, ListGroups, OffsetFetch of all topics) leave out
//! what may not be described. A request left with nothing to forward is answered here.
//!
//! Decisions are made in `start`, from the cached ACL set, without waiting (see
//! [`super::cache`]), so Produce keeps its arrival order. Only requests that name topics by id
//! (Fetch v13+, DeleteTopics v6) or may auto-create a topic the client may not create
//! (Metadata) first look topics up in the catalog, in the request's own future: those are
//! reads, or writes that take effect when their future completes, so waiting there keeps the
//! wire core's ordering. An API this layer does not know is refused (the connection closes),
//! so a newly served API cannot slip through unchecked. Requests between tiers do not travel
//! over Kafka (the indexers are reached over HTTP), so nothing internal is checked here.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use uuid::Uuid;

use super::authorizer::{Authorizer, RequestAuthz};
use super::{groups, topics};
use crate::catalog::Catalog;
use crate::wire::{ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext};

/// Changes the forwarded request's answer (adds the refused resources back).
pub(super) type Fixup = Box<dyn FnOnce(ResponseKind) -> ResponseKind + Send>;

/// What to do with one request.
pub(super) enum Plan {
    /// Forward the (possibly narrowed) request; fix its answer.
    Forward(RequestKind, Fixup),
    /// Answer without forwarding.
    Answer(ResponseKind),
    /// Nothing to forward and no answer expected (Produce with acks=0).
    Silent,
    /// Look topics up first, then decide.
    Defer(BoxFuture<'static, Plan>),
    /// Not an API this layer knows.
    Unknown,
}

impl Plan {
    pub(super) fn forward(request: impl Into<RequestKind>) -> Plan {
        Plan::Forward(request.into(), Box::new(|r| r))
    }
}

/// Builds a [`Fixup`] that edits one kind of response in place.
macro_rules! fixup {
    ($variant:ident, $f:expr) => {{
        let f = $f;
        Box::new(move |r: ::kafka_protocol::messages::ResponseKind| match r {
            ::kafka_protocol::messages::ResponseKind::$variant(mut response) => {
                f(&mut response);
                ::kafka_protocol::messages::ResponseKind::$variant(response)
            }
            other => other,
        }) as $crate::authz::enforce::Fixup
    }};
}
pub(super) use fixup;

/// The plan for a request narrowed to what its principal may touch, with `$refused` the
/// answers for what was taken out: answered at once when `$nothing_left` (every item was
/// refused), else forwarded with the refusals added to the answer's `$field`.
macro_rules! narrowed {
    ($request:expr, $nothing_left:expr, $variant:ident, $response:ty, $field:ident, $refused:expr) => {{
        let refused = $refused;
        if $nothing_left {
            let mut response = <$response>::default();
            response.$field = refused;
            $crate::authz::enforce::Plan::Answer(response.into())
        } else {
            $crate::authz::enforce::Plan::Forward(
                $request.into(),
                $crate::authz::enforce::fixup!($variant, move |a: &mut $response| a
                    .$field
                    .extend(refused)),
            )
        }
    }};
}
pub(super) use narrowed;

/// What the per-API rules need besides the request.
#[derive(Clone)]
pub(super) struct Context {
    pub(super) authz: RequestAuthz,
    pub(super) version: i16,
    pub(super) catalog: Arc<Catalog>,
    /// Whether this listener creates unknown topics that Metadata asks for.
    pub(super) auto_create: bool,
}

/// A handler that authorizes every request before `inner` sees it.
pub struct AuthorizingHandler {
    inner: Arc<dyn KafkaHandler>,
    authorizer: Arc<Authorizer>,
    catalog: Arc<Catalog>,
    auto_create: bool,
}

impl AuthorizingHandler {
    /// `auto_create`: whether Metadata may create unknown topics (the listener's setting).
    pub fn new(
        inner: Arc<dyn KafkaHandler>,
        authorizer: Arc<Authorizer>,
        catalog: Arc<Catalog>,
        auto_create: bool,
    ) -> Self {
        AuthorizingHandler {
            inner,
            authorizer,
            catalog,
            auto_create,
        }
    }
}

#[async_trait::async_trait]
impl KafkaHandler for AuthorizingHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        self.inner.supported_apis()
    }

    async fn start(&self, ctx: RequestContext, request: RequestKind) -> Dispatch {
        let cx = Context {
            authz: self.authorizer.request(&ctx),
            version: ctx.api_version,
            catalog: self.catalog.clone(),
            auto_create: self.auto_create,
        };
        match plan(cx, request) {
            Plan::Defer(decide) => {
                let inner = self.inner.clone();
                Dispatch::Respond(Box::pin(async move {
                    match execute(&inner, ctx, decide.await).await {
                        Dispatch::Respond(answer) => answer.await,
                        Dispatch::NoResponse(done) => {
                            done.await;
                            Err(HandlerError::Fatal(
                                "no answer to a deferred request".into(),
                            ))
                        }
                    }
                }))
            }
            decided => execute(&self.inner, ctx, decided).await,
        }
    }
}

/// Carries out a decided plan.
async fn execute(inner: &Arc<dyn KafkaHandler>, ctx: RequestContext, plan: Plan) -> Dispatch {
    match plan {
        Plan::Forward(request, fix) => match inner.start(ctx, request).await {
            Dispatch::Respond(answer) => {
                Dispatch::Respond(Box::pin(async move { answer.await.map(fix) }))
            }
            no_response => no_response,
        },
        Plan::Answer(response) => Dispatch::ready(response),
        Plan::Silent => Dispatch::NoResponse(Box::pin(async {})),
        Plan::Defer(_) | Plan::Unknown => {
            let api = ctx.api_key;
            Dispatch::Respond(Box::pin(async move {
                Err(HandlerError::Fatal(format!(
                    "no authorization rule for {api:?}"
                )))
            }))
        }
    }
}

/// Every API this layer has a rule for (ApiVersions is answered by the wire core).
pub const AUTHORIZED_APIS: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::SyncGroup,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::SaslHandshake,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::DeleteRecords,
    ApiKey::InitProducerId,
    ApiKey::DescribeAcls,
    ApiKey::CreateAcls,
    ApiKey::DeleteAcls,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::SaslAuthenticate,
    ApiKey::CreatePartitions,
    ApiKey::DeleteGroups,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::OffsetDelete,
    ApiKey::DescribeCluster,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::AlterUserScramCredentials,
];

/// The rule of each API (see the module documentation and docs/security.md).
fn plan(cx: Context, request: RequestKind) -> Plan {
    use RequestKind as R;
    match request {
        R::Produce(r) => topics::produce(&cx, r),
        R::Fetch(r) => topics::fetch(cx, r),
        R::ListOffsets(r) => topics::list_offsets(&cx, r),
        R::Metadata(r) => topics::metadata(cx, r),
        R::CreateTopics(r) => topics::create_topics(&cx, r),
        R::DeleteTopics(r) => topics::delete_topics(cx, r),
        R::CreatePartitions(r) => topics::create_partitions(&cx, r),
        R::DeleteRecords(r) => topics::delete_records(&cx, r),
        R::DescribeConfigs(r) => topics::describe_configs(&cx, r),
        R::AlterConfigs(r) => topics::alter_configs(&cx, r),
        R::IncrementalAlterConfigs(r) => topics::incremental_alter_configs(&cx, r),
        R::FindCoordinator(r) => groups::find_coordinator(&cx, r),
        R::JoinGroup(r) => groups::join_group(&cx, r),
        R::SyncGroup(r) => groups::sync_group(&cx, r),
        R::Heartbeat(r) => groups::heartbeat(&cx, r),
        R::LeaveGroup(r) => groups::leave_group(&cx, r),
        R::OffsetCommit(r) => groups::offset_commit(&cx, r),
        R::OffsetFetch(r) => groups::offset_fetch(&cx, r),
        R::DescribeGroups(r) => groups::describe_groups(&cx, r),
        R::ListGroups(r) => groups::list_groups(&cx, r),
        R::DeleteGroups(r) => groups::delete_groups(&cx, r),
        R::OffsetDelete(r) => groups::offset_delete(&cx, r),
        R::InitProducerId(r) => groups::init_producer_id(&cx, r),
        R::DescribeUserScramCredentials(r) => groups::describe_scram(&cx, r),
        R::AlterUserScramCredentials(r) => groups::alter_scram(&cx, r),
        // Answered to anyone, as Kafka does: authentication itself, the ACL APIs (they check
        // their own cluster permission) and DescribeCluster (what Metadata tells anyone).
        R::ApiVersions(r) => Plan::forward(r),
        R::SaslHandshake(r) => Plan::forward(r),
        R::SaslAuthenticate(r) => Plan::forward(r),
        R::DescribeAcls(r) => Plan::forward(r),
        R::CreateAcls(r) => Plan::forward(r),
        R::DeleteAcls(r) => Plan::forward(r),
        R::DescribeCluster(r) => Plan::forward(r),
        _ => Plan::Unknown,
    }
}

/// What a topic id named when it was looked up.
pub(super) enum Resolved {
    Name(String),
    /// No such topic: the handler answers UNKNOWN_TOPIC_ID.
    Unknown,
    /// The lookup failed: the topic is refused (a retriable error), never forwarded unchecked.
    Failed,
}

impl Resolved {
    /// What `id` resolved to in `ids` (not looked up: unknown).
    pub(super) fn of(ids: &HashMap<Uuid, Resolved>, id: Uuid) -> Resolved {
        match ids.get(&id) {
            Some(Resolved::Name(name)) => Resolved::Name(name.clone()),
            Some(Resolved::Failed) => Resolved::Failed,
            Some(Resolved::Unknown) | None => Resolved::Unknown,
        }
    }
}

/// Looks topic ids up in the catalog.
pub(super) async fn resolve_ids(
    catalog: &Catalog,
    ids: impl IntoIterator<Item = Uuid>,
) -> HashMap<Uuid, Resolved> {
    let mut out = HashMap::new();
    for id in ids {
        if out.contains_key(&id) {
            continue;
        }
        let resolved = match catalog.topic_by_id(id).await {
            Ok(Some(t)) => Resolved::Name(t.name),
            Ok(None) => Resolved::Unknown,
            Err(_) => Resolved::Failed,
        };
        out.insert(id, resolved);
    }
    out
}

#[cfg(test)]
#[path = "enforce_tests.rs"]
mod tests;
