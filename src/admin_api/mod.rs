//! The admin HTTP API: JSON under `/v1`, described by an OpenAPI 3 document at
//! `/openapi.json` that is generated from these handlers and types (utoipa), served on the
//! HTTP listener of standalone and of every gateway.
//!
//! Why it lives in the binary crate: it needs the catalog (`kafscale-shared`) *and* the
//! consumer-group state, which exists only in the fetch tier's [`GroupService`] (membership is
//! in the coordinating process's memory). Tier crates never depend on each other, and only the
//! `kafscale` binary wires them together, so the binary is the one place that may see both.
//! Group state is reached only through GroupService's narrow public methods
//! (`list_coordinated_groups`, `describe_group`, `reset_offsets`, ...), never its internals.
//!
//! Every request passes the process's common HTTP layers (`crate::http`: trace span, panic,
//! deadline) and then the admin stack, in one place ([`router`]): JSON errors for
//! whatever an inner layer answers, a concurrency limit, a timeout, bearer
//! authentication ([`auth`]) and a body limit. Handlers only read and write the metadata store
//! and the group service; they hold no state of their own, so any gateway can answer for
//! topics, shards and committed offsets, and the coordinator of a group for its members.

mod auth;
pub(crate) mod cluster;
mod error;
pub(crate) mod groups;
mod shard_status;
pub(crate) mod topics;
pub(crate) mod users;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use kafscale_fetch::{FetchService, GroupService};
use kafscale_indexer::Indexer;
use kafscale_shared::catalog::Catalog;
use kafscale_shared::http_client::InternalCalls;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;

pub(crate) use auth::AdminAuth;
pub(crate) use error::{ApiError, ErrorBody};
use shard_status::ShardFigures;

/// Largest request body accepted (topic creation with its configs is the largest).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Admin requests served at once; more wait.
const MAX_CONCURRENT_REQUESTS: usize = 32;
/// How long one admin request may take (describing a very wide topic reads every partition).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of the admin API (standalone, ingest, fetch).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AdminApiArgs {
    /// File holding the bearer token that admin API mutations need (create, delete, reset).
    /// Without a token (here or in KAFSCALE_ADMIN_TOKEN) the API is read-only.
    #[arg(long, env = "KAFSCALE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// The admin API's bearer token itself (prefer the file or the environment variable: a
    /// flag is visible in the process list).
    #[arg(long, env = "KAFSCALE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Reads of the admin API need a token too (the admin token or the read-only one).
    #[arg(long, env = "KAFSCALE_ADMIN_AUTH_READS", default_value_t = false, action = clap::ArgAction::Set)]
    admin_auth_reads: bool,
    /// File holding a read-only bearer token: it may read (with --admin-auth-reads true) but
    /// never mutate, for dashboards and on-call tools that should not hold the admin token.
    #[arg(long, env = "KAFSCALE_ADMIN_READ_TOKEN_FILE")]
    admin_read_token_file: Option<PathBuf>,
    /// The read-only token itself (prefer the file or the environment variable).
    #[arg(long, env = "KAFSCALE_ADMIN_READ_TOKEN", hide_env_values = true)]
    admin_read_token: Option<String>,
}

impl AdminApiArgs {
    /// The authentication settings: the token from the file, else from the flag/variable.
    pub(crate) fn auth(&self) -> anyhow::Result<AdminAuth> {
        let token = kafscale_shared::bearer::read_token(
            self.admin_token_file.as_deref(),
            self.admin_token.as_deref(),
            "--admin-token-file",
        )?;
        let read_token = kafscale_shared::bearer::read_token(
            self.admin_read_token_file.as_deref(),
            self.admin_read_token.as_deref(),
            "--admin-read-token-file",
        )?;
        let auth = AdminAuth::new(token.as_deref(), self.admin_auth_reads)
            .with_read_token(read_token.as_deref())?;
        if self.admin_auth_reads && !auth.has_token() && !auth.has_read_token() {
            anyhow::bail!(
                "--admin-auth-reads needs a token (--admin-token-file or KAFSCALE_ADMIN_TOKEN, \
                 or a read-only one)"
            );
        }
        if auth.has_read_token() && !self.admin_auth_reads {
            anyhow::bail!(
                "a read-only admin token (--admin-read-token-file or KAFSCALE_ADMIN_READ_TOKEN) \
                 only means something when reads need a token: set --admin-auth-reads true"
            );
        }
        if !auth.has_token() {
            tracing::info!("no admin token configured: the admin API is read-only");
        }
        Ok(auth)
    }
}

/// What the handlers read and write through.
#[derive(Clone)]
pub(crate) struct AdminState {
    inner: Arc<Inner>,
}

struct Inner {
    mode: &'static str,
    catalog: Arc<Catalog>,
    shard_count: u32,
    default_partitions: i32,
    /// Set once the Kafka tiers have started (before the HTTP server serves requests).
    tiers: OnceLock<Tiers>,
    /// Standalone's in-process indexer (gateways ask the indexers over HTTP instead).
    local_indexer: OnceLock<Arc<Indexer>>,
    /// How a gateway reaches the indexers (token, HTTPS).
    internal_calls: OnceLock<InternalCalls>,
}

/// The services of the running Kafka tiers the API reads group state and offsets through.
struct Tiers {
    fetch: Arc<FetchService>,
    groups: Arc<GroupService>,
}

impl AdminState {
    /// `mode`: "standalone", "ingest" or "fetch", as the cluster endpoint reports it.
    pub(crate) fn new(
        mode: &'static str,
        catalog: Arc<Catalog>,
        shard_count: u32,
        default_partitions: i32,
    ) -> Self {
        AdminState {
            inner: Arc::new(Inner {
                mode,
                catalog,
                shard_count,
                default_partitions,
                tiers: OnceLock::new(),
                local_indexer: OnceLock::new(),
                internal_calls: OnceLock::new(),
            }),
        }
    }

    /// Hands over the process's fetch and group services once the tiers have started.
    pub(crate) fn set_tiers(&self, fetch: Arc<FetchService>, groups: Arc<GroupService>) {
        if self.inner.tiers.set(Tiers { fetch, groups }).is_err() {
            tracing::warn!("admin API: tiers set twice; keeping the first");
        }
    }

    /// Standalone: the shard figures come from this in-process indexer.
    pub(crate) fn set_local_indexer(&self, indexer: Arc<Indexer>) {
        if self.inner.local_indexer.set(indexer).is_err() {
            tracing::warn!("admin API: indexer set twice; keeping the first");
        }
    }

    /// Hands over how a gateway calls the indexers (for their shard figures).
    pub(crate) fn set_internal_calls(&self, calls: InternalCalls) {
        if self.inner.internal_calls.set(calls).is_err() {
            tracing::warn!("admin API: internal calls set twice; keeping the first");
        }
    }

    fn shard_figures(&self) -> ShardFigures {
        match self.inner.local_indexer.get() {
            Some(indexer) => ShardFigures::Local(indexer.clone()),
            None => {
                ShardFigures::Remote(self.inner.internal_calls.get().cloned().unwrap_or_default())
            }
        }
    }

    fn catalog(&self) -> &Arc<Catalog> {
        &self.inner.catalog
    }

    fn groups(&self) -> Result<&Arc<GroupService>, ApiError> {
        self.inner
            .tiers
            .get()
            .map(|t| &t.groups)
            .ok_or(ApiError::NoGroups)
    }

    fn fetch(&self) -> Result<&Arc<FetchService>, ApiError> {
        self.inner
            .tiers
            .get()
            .map(|t| &t.fetch)
            .ok_or(ApiError::NoGroups)
    }
}

/// The admin routes (`/v1/...` behind the layers, `/openapi.json` open to all), to merge
/// into the process's HTTP router.
pub(crate) fn router(state: AdminState, auth: AdminAuth) -> Router {
    let v1 = Router::new()
        .route("/cluster", get(cluster::cluster))
        .route("/shards", get(cluster::shards))
        .route("/topics", get(topics::list).post(topics::create))
        .route(
            "/topics/{topic}",
            get(topics::describe).delete(topics::delete),
        )
        .route("/topics/{topic}/configs", get(topics::configs))
        .route(
            "/topics/{topic}/partitions/{partition}/segments",
            get(topics::segments),
        )
        .route("/groups", get(groups::list))
        .route(
            "/groups/{group}",
            get(groups::describe).delete(groups::delete),
        )
        .route("/groups/{group}/offsets", get(groups::offsets))
        .route("/users", get(users::list))
        .route(
            "/users/{user}/credentials/{mechanism}",
            axum::routing::put(users::set).delete(users::delete),
        )
        .route(
            "/groups/{group}/offsets/reset",
            axum::routing::post(groups::reset),
        )
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::require_token,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(ConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        .layer(axum::middleware::from_fn(error::json_errors));
    Router::new()
        .nest("/v1", v1)
        .route("/openapi.json", get(openapi_json))
}

async fn not_found() -> ApiError {
    ApiError::NoSuchEndpoint
}

/// The OpenAPI document, rendered once.
async fn openapi_json() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".into())
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.clone(),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kafscale admin API",
        version = "1",
        description = "Topics, consumer groups, segments, indexer shards and SASL users of a kafscale cluster. \
            Mutations (POST, PUT, DELETE) need `Authorization: Bearer <token>`; errors are \
            `{\"code\", \"message\"}` with a stable code."
    ),
    paths(
        cluster::cluster,
        cluster::shards,
        topics::list,
        topics::create,
        topics::describe,
        topics::delete,
        topics::configs,
        topics::segments,
        groups::list,
        groups::describe,
        groups::delete,
        groups::offsets,
        groups::reset,
        users::list,
        users::set,
        users::delete,
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "cluster", description = "Processes, indexer shards and coordinator slots"),
        (name = "topics", description = "Topics, partitions and their segments"),
        (name = "groups", description = "Consumer groups and their committed offsets"),
        (name = "users", description = "SCRAM users of SASL authentication"),
    )
)]
pub(crate) struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
