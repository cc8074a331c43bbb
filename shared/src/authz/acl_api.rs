//! DescribeAcls (key 29), CreateAcls (30) and DeleteAcls (31), v1-3 (v2+ flexible; v0, gone
//! from Kafka 4, is not decoded by kafka-protocol): what `kafka-acls.sh` and AdminClient's
//! `describeAcls`/`createAcls`/`deleteAcls` use.
//!
//! Kafka's rules: with no authorizer every answer is SECURITY_DISABLED; DescribeAcls needs
//! DESCRIBE on the cluster, CreateAcls and DeleteAcls ALTER on the cluster (else
//! CLUSTER_AUTHORIZATION_FAILED); a binding or filter with an unknown code, an ANY in a
//! binding, a principal not of the form `Type:name` or a CLUSTER name other than
//! `kafka-cluster` is INVALID_REQUEST for that creation or filter alone. Describe and delete
//! read the store, not the cache, so they show changes made on other gateways; a create or
//! delete refreshes this gateway's cache before it answers, so the client's next request here
//! is decided by the new set.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_acl::{AclBinding, AclBindingFilter, AclError, Operation};
use tracing::{info, warn};

use super::authorizer::{Authorizer, RequestAuthz};
use crate::meta_store::MetaStoreError;
use crate::wire::{ApiSupport, Dispatch, HandlerError, KafkaHandler, RequestContext};

/// DescribeAcls, CreateAcls and DeleteAcls v1-3.
pub const ACL_APIS: [ApiSupport; 3] = [
    ApiSupport::new(ApiKey::DescribeAcls, 1, 3),
    ApiSupport::new(ApiKey::CreateAcls, 1, 3),
    ApiSupport::new(ApiKey::DeleteAcls, 1, 3),
];

const NO_AUTHORIZER: &str = "no authorizer is configured on this broker (--acl-enabled)";

/// Serves the ACL APIs; `None` when the authorizer is off (every answer SECURITY_DISABLED).
pub struct AclHandler {
    authorizer: Option<Arc<Authorizer>>,
}

impl AclHandler {
    pub fn new(authorizer: Option<Arc<Authorizer>>) -> Self {
        AclHandler { authorizer }
    }
}

/// An error code and message.
type Failure = (ResponseError, String);

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn failure_of_store(e: &MetaStoreError) -> Failure {
    warn!(error = %e, "acl store request failed");
    (ResponseError::KafkaStorageError, e.to_string())
}

fn failure_of_invalid(e: &AclError) -> Failure {
    (ResponseError::InvalidRequest, e.to_string())
}

/// Why the request may not go on: no authorizer, or not allowed `operation` on the cluster.
fn refusal(
    authorizer: &Option<Arc<Authorizer>>,
    ctx: &RequestContext,
    operation: Operation,
) -> Result<Arc<Authorizer>, Failure> {
    let Some(authorizer) = authorizer else {
        return Err((ResponseError::SecurityDisabled, NO_AUTHORIZER.into()));
    };
    let authz: RequestAuthz = authorizer.request(ctx);
    if !authz.cluster(operation) {
        return Err((
            ResponseError::ClusterAuthorizationFailed,
            format!("{operation:?} on the cluster is not allowed"),
        ));
    }
    Ok(authorizer.clone())
}

#[async_trait::async_trait]
impl KafkaHandler for AclHandler {
    fn supported_apis(&self) -> Vec<ApiSupport> {
        ACL_APIS.to_vec()
    }

    async fn start(&self, ctx: RequestContext, request: RequestKind) -> Dispatch {
        let authorizer = &self.authorizer;
        let respond = |f: futures::future::BoxFuture<'static, ResponseKind>| {
            Dispatch::Respond(Box::pin(async move { Ok(f.await) }))
        };
        match request {
            RequestKind::DescribeAcls(r) => {
                let allowed = refusal(authorizer, &ctx, Operation::Describe);
                respond(Box::pin(async move { describe(allowed, r).await.into() }))
            }
            RequestKind::CreateAcls(r) => {
                let allowed = refusal(authorizer, &ctx, Operation::Alter);
                respond(Box::pin(async move { create(allowed, r).await.into() }))
            }
            RequestKind::DeleteAcls(r) => {
                let allowed = refusal(authorizer, &ctx, Operation::Alter);
                respond(Box::pin(async move { delete(allowed, r).await.into() }))
            }
            _ => {
                let api = ctx.api_key;
                Dispatch::Respond(Box::pin(async move {
                    Err(HandlerError::Fatal(format!(
                        "acl handler cannot serve {api:?}"
                    )))
                }))
            }
        }
    }
}

async fn describe(
    allowed: Result<Arc<Authorizer>, Failure>,
    r: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let mut response = DescribeAclsResponse::default();
    match describe_bindings(allowed, &r).await {
        Ok(bindings) => response.resources = describe_resources(bindings),
        Err((code, message)) => {
            response.error_code = code.code();
            response.error_message = Some(s(&message));
        }
    }
    response
}

async fn describe_bindings(
    allowed: Result<Arc<Authorizer>, Failure>,
    r: &DescribeAclsRequest,
) -> Result<Vec<AclBinding>, Failure> {
    let authorizer = allowed?;
    let filter = AclBindingFilter::from_wire(
        r.resource_type_filter,
        r.resource_name_filter.as_deref(),
        r.pattern_type_filter,
        r.principal_filter.as_deref(),
        r.host_filter.as_deref(),
        r.operation,
        r.permission_type,
    )
    .map_err(|e| failure_of_invalid(&e))?;
    let stored = authorizer
        .cache()
        .store()
        .load()
        .await
        .map_err(|e| failure_of_store(&e))?;
    Ok(stored
        .bindings
        .into_iter()
        .filter(|b| filter.matches(b))
        .collect())
}

/// Groups bindings by resource pattern, as DescribeAcls answers.
fn describe_resources(bindings: Vec<AclBinding>) -> Vec<DescribeAclsResource> {
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    let mut sorted = bindings;
    sorted.sort();
    for b in sorted {
        let mut acl = AclDescription::default();
        acl.principal = s(&b.principal);
        acl.host = s(&b.host);
        acl.operation = b.operation.code();
        acl.permission_type = b.permission.code();
        by_resource
            .entry((b.resource_type.code(), b.resource_name, b.pattern.code()))
            .or_default()
            .push(acl);
    }
    by_resource
        .into_iter()
        .map(|((resource_type, name, pattern), acls)| {
            let mut resource = DescribeAclsResource::default();
            resource.resource_type = resource_type;
            resource.resource_name = s(&name);
            resource.pattern_type = pattern;
            resource.acls = acls;
            resource
        })
        .collect()
}

fn creation_result(outcome: &Result<AclBinding, Failure>) -> AclCreationResult {
    let mut result = AclCreationResult::default();
    if let Err((code, message)) = outcome {
        result.error_code = code.code();
        result.error_message = Some(s(message));
    }
    result
}

async fn create(
    allowed: Result<Arc<Authorizer>, Failure>,
    r: CreateAclsRequest,
) -> CreateAclsResponse {
    let mut outcomes: Vec<Result<AclBinding, Failure>> = r
        .creations
        .iter()
        .map(|c| {
            AclBinding::from_wire(
                c.resource_type,
                c.resource_name.as_str(),
                c.resource_pattern_type,
                c.principal.as_str(),
                c.host.as_str(),
                c.operation,
                c.permission_type,
            )
            .map_err(|e| failure_of_invalid(&e))
        })
        .collect();
    match allowed {
        Err(failure) => outcomes.iter_mut().for_each(|o| *o = Err(failure.clone())),
        Ok(authorizer) => {
            let valid: Vec<AclBinding> = outcomes.iter().filter_map(|o| o.clone().ok()).collect();
            if let Err(failure) = store_and_refresh(&authorizer, &valid, true).await {
                outcomes
                    .iter_mut()
                    .filter(|o| o.is_ok())
                    .for_each(|o| *o = Err(failure.clone()));
            } else if !valid.is_empty() {
                info!(acls = ?valid, "acls created");
            }
        }
    }
    let mut response = CreateAclsResponse::default();
    response.results = outcomes.iter().map(creation_result).collect();
    response
}

/// Creates or deletes `bindings`, then refreshes this gateway's cache.
async fn store_and_refresh(
    authorizer: &Authorizer,
    bindings: &[AclBinding],
    create: bool,
) -> Result<(), Failure> {
    if bindings.is_empty() {
        return Ok(());
    }
    let store = authorizer.cache().store();
    let written = if create {
        store.create(bindings).await
    } else {
        store.delete(bindings).await
    };
    written.map_err(|e| failure_of_store(&e))?;
    authorizer
        .cache()
        .refresh()
        .await
        .map_err(|e| failure_of_store(&e))
}

async fn delete(
    allowed: Result<Arc<Authorizer>, Failure>,
    r: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let outcomes = match allowed {
        Err(failure) => r.filters.iter().map(|_| Err(failure.clone())).collect(),
        Ok(authorizer) => delete_matching(&authorizer, &r).await,
    };
    let mut response = DeleteAclsResponse::default();
    response.filter_results = outcomes.into_iter().map(filter_result).collect();
    response
}

/// The bindings each filter deleted (or why it deleted none).
async fn delete_matching(
    authorizer: &Authorizer,
    r: &DeleteAclsRequest,
) -> Vec<Result<Vec<AclBinding>, Failure>> {
    let filters: Vec<Result<AclBindingFilter, Failure>> = r
        .filters
        .iter()
        .map(|f| {
            AclBindingFilter::from_wire(
                f.resource_type_filter,
                f.resource_name_filter.as_deref(),
                f.pattern_type_filter,
                f.principal_filter.as_deref(),
                f.host_filter.as_deref(),
                f.operation,
                f.permission_type,
            )
            .map_err(|e| failure_of_invalid(&e))
        })
        .collect();
    let stored = match authorizer.cache().store().load().await {
        Ok(stored) => stored.bindings,
        Err(e) => {
            let failure = failure_of_store(&e);
            return filters.iter().map(|_| Err(failure.clone())).collect();
        }
    };
    let mut outcomes: Vec<Result<Vec<AclBinding>, Failure>> = filters
        .into_iter()
        .map(|f| f.map(|f| stored.iter().filter(|b| f.matches(b)).cloned().collect()))
        .collect();
    let doomed: Vec<AclBinding> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    if let Err(failure) = store_and_refresh(authorizer, &doomed, false).await {
        outcomes
            .iter_mut()
            .filter(|o| o.is_ok())
            .for_each(|o| *o = Err(failure.clone()));
    } else if !doomed.is_empty() {
        info!(acls = ?doomed, "acls deleted");
    }
    outcomes
}

fn filter_result(outcome: Result<Vec<AclBinding>, Failure>) -> DeleteAclsFilterResult {
    let mut result = DeleteAclsFilterResult::default();
    match outcome {
        Err((code, message)) => {
            result.error_code = code.code();
            result.error_message = Some(s(&message));
        }
        Ok(bindings) => {
            result.matching_acls = bindings
                .into_iter()
                .map(|b| {
                    let mut m = DeleteAclsMatchingAcl::default();
                    m.resource_type = b.resource_type.code();
                    m.resource_name = s(&b.resource_name);
                    m.pattern_type = b.pattern.code();
                    m.principal = s(&b.principal);
                    m.host = s(&b.host);
                    m.operation = b.operation.code();
                    m.permission_type = b.permission.code();
                    m
                })
                .collect()
        }
    }
    result
}
