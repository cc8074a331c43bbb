//! The authorizer flags (`--acl-enabled`, `--super-users`, `--acl-refresh-ms`) and starting the
//! ACL cache: shared by standalone and both gateways, so every tier authorizes alike.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kafscale_acl::SuperUsers;
use kafscale_shared::authz::{AclCache, AclStore, Authorizer};
use kafscale_shared::catalog::Catalog;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Flags of Kafka ACL authorization (each also read from a `KAFSCALE_*` environment variable).
#[derive(Debug, clap::Args)]
pub(crate) struct AuthorizerArgs {
    /// Enforce Kafka ACLs: every request needs an ALLOW binding (deny by default) unless its
    /// principal is a super user; a connection without a principal is `User:ANONYMOUS`. Off:
    /// everything is allowed and the ACL APIs answer SECURITY_DISABLED.
    #[arg(long, visible_alias = "authorizer", env = "KAFSCALE_ACL_ENABLED")]
    acl_enabled: bool,
    /// Principals allowed everything, separated by `;` (Kafka's `super.users`), e.g.
    /// `User:admin;User:CN=ops,O=example`.
    #[arg(long, env = "KAFSCALE_SUPER_USERS", default_value = "")]
    super_users: String,
    /// How often a gateway checks the store for ACL changes made elsewhere (milliseconds):
    /// the bound on how long another gateway's change takes to apply here.
    #[arg(long, env = "KAFSCALE_ACL_REFRESH_MS", default_value_t = 1000)]
    acl_refresh_ms: u64,
}

impl AuthorizerArgs {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        SuperUsers::parse(&self.super_users).context("--super-users")?;
        Ok(())
    }

    /// Loads the ACLs and starts their refresh (until `shutdown`); `None` when off.
    pub(crate) async fn start(
        &self,
        catalog: &Arc<Catalog>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<(Arc<Authorizer>, JoinHandle<()>)>> {
        if !self.acl_enabled {
            if !self.super_users.trim().is_empty() {
                warn!("--super-users has no effect without --acl-enabled");
            }
            return Ok(None);
        }
        let super_users = SuperUsers::parse(&self.super_users).context("--super-users")?;
        if super_users == SuperUsers::default() {
            warn!(
                "acls are enforced but there are no --super-users: only existing ACLs can grant anything, and none can be changed"
            );
        }
        let cache = AclCache::load(AclStore::new(catalog.store().clone()))
            .await
            .context("loading the acls")?;
        let refresh = tokio::spawn(cache.clone().run_refresher(
            Duration::from_millis(self.acl_refresh_ms.max(1)),
            shutdown.clone(),
        ));
        info!(
            acls = cache.index().bindings().len(),
            refresh_ms = self.acl_refresh_ms,
            "acls enforced"
        );
        Ok(Some((
            Arc::new(Authorizer::new(cache, super_users)),
            refresh,
        )))
    }
}
