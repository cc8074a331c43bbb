//! The authorization decision of one request: who asks (the connection's principal, or
//! `User:ANONYMOUS`), from where, against the cached ACL set and the super users. Every denial
//! is counted (`kafscale_authorization_denials_total` by API) and logged at debug level with
//! the principal, operation and resource.

use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use kafscale_acl::{
    ANONYMOUS, AclIndex, CLUSTER_NAME, Operation, ResourceType, Session, SuperUsers,
};
use tracing::debug;

use super::cache::AclCache;
use crate::metrics as names;
use crate::wire::RequestContext;

/// The ACL set and super users of one process.
#[derive(Debug)]
pub struct Authorizer {
    cache: Arc<AclCache>,
    super_users: SuperUsers,
}

impl Authorizer {
    pub fn new(cache: Arc<AclCache>, super_users: SuperUsers) -> Self {
        Authorizer { cache, super_users }
    }

    pub fn cache(&self) -> &Arc<AclCache> {
        &self.cache
    }

    /// The decisions for one request, all against the same ACL set.
    pub fn request(&self, ctx: &RequestContext) -> RequestAuthz {
        let principal: Arc<str> = ctx
            .principal
            .clone()
            .unwrap_or_else(|| Arc::from(ANONYMOUS));
        RequestAuthz {
            superuser: self.super_users.contains(&principal),
            index: self.cache.index(),
            principal,
            host: ctx.peer.ip().to_string(),
            api: ctx.api_key,
        }
    }
}

/// The decisions for one request.
#[derive(Debug, Clone)]
pub struct RequestAuthz {
    index: Arc<AclIndex>,
    principal: Arc<str>,
    host: String,
    superuser: bool,
    api: ApiKey,
}

impl RequestAuthz {
    fn session(&self) -> Session<'_> {
        Session {
            principal: &self.principal,
            host: &self.host,
        }
    }

    /// Whether the request may perform `operation` on `resource_type`/`name`; a denial is
    /// counted and logged.
    pub fn allowed(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        let ok = self.allowed_quietly(operation, resource_type, name);
        if !ok {
            self.denied(operation, resource_type, name);
        }
        ok
    }

    /// As [`RequestAuthz::allowed`], without counting a denial: for checks whose failure is
    /// not a refusal (a topic left out of a listing, a second way of being allowed).
    pub fn allowed_quietly(
        &self,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.superuser
            || self
                .index
                .authorize(&self.session(), operation, resource_type, name)
    }

    /// Whether the request may perform `operation` on the cluster.
    pub fn cluster(&self, operation: Operation) -> bool {
        self.allowed(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether the request may perform `operation` on some resource of `resource_type`
    /// (counted and logged as a denial on the type when not).
    pub fn allowed_on_any(&self, operation: Operation, resource_type: ResourceType) -> bool {
        let ok = self.superuser
            || self
                .index
                .authorize_by_type(&self.session(), operation, resource_type);
        if !ok {
            self.denied(operation, resource_type, "<any>");
        }
        ok
    }

    /// Counts and logs a refusal.
    pub fn denied(&self, operation: Operation, resource_type: ResourceType, name: &str) {
        let api = format!("{:?}", self.api);
        metrics::counter!(names::AUTHORIZATION_DENIALS, "listener" => names::role(), "api" => api.clone())
            .increment(1);
        debug!(
            principal = %self.principal,
            host = %self.host,
            api,
            operation = ?operation,
            resource_type = ?resource_type,
            resource = name,
            "authorization denied"
        );
    }
}
