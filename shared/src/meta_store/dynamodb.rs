//! A [`MetaStore`] on Amazon DynamoDB (or any server speaking its API), for distributed mode.
//!
//! Distributed brokers keep no disks, so their metadata must live in a service that every
//! broker can reach and that offers conditional, atomic writes. DynamoDB has exactly the
//! primitives the [`MetaStore`] contract was shaped after, so each trait call maps onto one or a
//! few API calls and the backend adds no coordination of its own.
//!
//! # Table design
//!
//! One table, named `{prefix}kafscale` ([`DynamoConfig::with_table_prefix`]), billed
//! `PAY_PER_REQUEST` (created by [`DynamoMetaStore::create_table_if_missing`]):
//!
//! | attribute | type | meaning |
//! | --- | --- | --- |
//! | `pk` | S, partition (HASH) key | [`ItemKey::pk`] |
//! | `sk` | S, sort (RANGE) key | [`ItemKey::sk`]; DynamoDB orders it by UTF-8 bytes, as the contract requires |
//! | `v` | B | the value (may be empty) |
//! | `ver` | N | the version: 1 on creation, +1 per put |
//!
//! Access patterns:
//!
//! - `get` → `GetItem` on (`pk`, `sk`).
//! - `query` → `Query` with `KeyConditionExpression` `pk = :pk` plus at most one sort-key
//!   condition (`=`, `<`, `<=`, `>`, `>=` or `BETWEEN`), `ScanIndexForward` for the direction,
//!   and `Limit` set to the items still wanted; pages (DynamoDB stops a page at 1 MB) are
//!   followed through `LastEvaluatedKey` until `limit` items or the end. A range with both bounds
//!   and an exclusive one is sent as `BETWEEN` and the excluded bound item dropped client-side
//!   (key attributes cannot appear in filter expressions).
//! - `write` of one `Put` → `UpdateItem` with `SET v = :v, ver = if_not_exists(ver, :zero) +
//!   :one`, so the version is incremented server-side in the same atomic step as the condition;
//!   one `Delete` → `DeleteItem`; anything else (several operations, or a lone `Check`) →
//!   `TransactWriteItems` with `Update`/`Delete`/`ConditionCheck` items and a fresh
//!   `ClientRequestToken`, so that the SDK's retries of one call are applied at most once.
//! - Conditions: `Absent` → `attribute_not_exists(pk)`, `Exists` → `attribute_exists(pk)`,
//!   `Version(n)` → `ver = :n`. A `Check` with no condition constrains nothing and is not sent.
//!
//! Every read is strongly consistent (`ConsistentRead`): compare-and-set loops and the
//! indexer's reload after a failed commit must see the latest committed write; eventually
//! consistent reads would turn into spurious condition failures.
//!
//! Limits, enforced before sending (as [`MetaStoreError::InvalidBatch`]): at most
//! [`MAX_BATCH_OPS`] operations per batch (the `TransactWriteItems` limit), no key twice,
//! non-empty keys of at most 2048 (`pk`) and 1024 (`sk`) bytes, items of at most
//! [`MAX_ITEM_BYTES`] (see [`max_value_len`]) and batches of at most
//! [`MAX_TRANSACTION_BYTES`].
//!
//! # Errors
//!
//! A failed condition is [`MetaStoreError::ConditionFailed`] naming the first failing operation
//! (from the transaction's `CancellationReasons`). Throttling, 5xx answers, timeouts, connection
//! failures, transaction conflicts and a missing table are [`MetaStoreError::Unavailable`]
//! (retryable), after the SDK's own retries: standard mode with exponential backoff, at most
//! [`DynamoConfig::max_attempts`] attempts of at most [`DynamoConfig::request_timeout`] each.
//! A single `UpdateItem`/`DeleteItem` has no idempotency token: if its response is lost and the
//! SDK retries it, the retry can fail its own condition; callers treat `ConditionFailed` by
//! re-reading, which then shows the applied write.
//!
//! # HTTP and credentials
//!
//! One HTTP client (hyper 1 with rustls on ring) built here, so the AWS crates need none of
//! their TLS features (see the workspace `Cargo.toml`). Credentials and, unless configured,
//! the region come from the standard AWS chain of `aws-config` (environment, profile, web
//! identity, ECS, IMDS); [`DynamoMetaStore::from_sdk_config`] takes a prepared `SdkConfig`
//! instead, e.g. to share one credentials cache with the S3 client.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{BuildError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CancellationReason, ConditionCheck, Delete,
    KeySchemaElement, KeyType, ScalarAttributeType, TableDescription, TableStatus,
    TransactWriteItem, Update,
};
use aws_smithy_http_client::tls;
use bytes::Bytes;

use super::batch::{is_empty_range, validate_batch};
use super::capacity;
use super::metrics::{MetaStoreMetrics, MetaStoreOp, Outcome, WriteCharge};
use super::{Condition, Direction, Item, ItemKey, MetaStore, MetaStoreError, Query, WriteOp};

/// The most operations of one `write` (`TransactWriteItems` takes 100 items).
pub const MAX_BATCH_OPS: usize = 100;
/// DynamoDB's item size limit (attribute names and values together).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's limit on the total size of the items of one transaction.
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
/// DynamoDB's limits on key attribute values (UTF-8 bytes).
const MAX_PK_BYTES: usize = 2048;
const MAX_SK_BYTES: usize = 1024;

/// Attribute names.
const PK: &str = "pk";
const SK: &str = "sk";
const VALUE: &str = "v";
const VERSION: &str = "ver";
/// The longest a version number can be in DynamoDB's size accounting (it counts about one byte
/// per two digits plus one; a `u64` has at most 20 digits, so this over-estimates).
const VERSION_SIZE_BOUND: usize = 21;

/// Waiting for a new table to become `ACTIVE`.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Where and how to reach the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoConfig {
    /// The table (`{prefix}kafscale`, see [`DynamoConfig::with_table_prefix`]).
    pub table_name: String,
    /// Endpoint URL override (DynamoDB Local, a compatible server); `None`: AWS's endpoint for
    /// the region (or `AWS_ENDPOINT_URL*` from the environment).
    pub endpoint: Option<String>,
    /// Region; `None`: the standard chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Bound on each attempt of a request (connect included).
    pub request_timeout: Duration,
    /// Attempts per request, the first included (the SDK retries transient failures with
    /// exponential backoff).
    pub max_attempts: u32,
}

/// Initial and largest backoff between attempts.
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl DynamoConfig {
    /// The table `{prefix}kafscale` at AWS's endpoint, with default timeouts: 5 s per attempt,
    /// 4 attempts.
    pub fn with_table_prefix(prefix: &str) -> Self {
        DynamoConfig {
            table_name: format!("{prefix}kafscale"),
            endpoint: None,
            region: None,
            request_timeout: Duration::from_secs(5),
            max_attempts: 4,
        }
    }

    /// The longest one store call can take before it fails: every attempt timing out, with the
    /// longest backoff between attempts. (A query makes one call per page.)
    pub fn max_call_duration(&self) -> Duration {
        let attempts = self.max_attempts.max(1);
        self.request_timeout * attempts + MAX_BACKOFF * (attempts - 1)
    }
}

/// Errors setting up the store or its table.
#[derive(Debug, thiserror::Error)]
pub enum DynamoSetupError {
    #[error("no AWS region: set the region in the configuration or AWS_REGION in the environment")]
    NoRegion,
    #[error("invalid DynamoDB table name {0:?} (3-255 characters of a-z, A-Z, 0-9, '_', '-', '.')")]
    InvalidTableName(String),
    #[error(
        "table {table} exists with another key schema ({found}); expected pk (S, HASH), sk (S, RANGE)"
    )]
    WrongKeySchema { table: String, found: String },
    #[error("table {table} did not become ACTIVE within {waited:?} (status {status})")]
    NotActive {
        table: String,
        waited: Duration,
        status: String,
    },
    #[error(transparent)]
    Store(#[from] MetaStoreError),
}

/// The largest value that fits in one item with `key` (DynamoDB's 400 KB item limit, less the
/// attribute names, the key and the version); 0 if even the key alone does not fit.
pub fn max_value_len(key: &ItemKey) -> usize {
    MAX_ITEM_BYTES.saturating_sub(item_size(key, 0))
}

/// An upper bound of the size DynamoDB accounts for an item with `key` and a value of
/// `value_len` bytes (what [`MAX_ITEM_BYTES`] and [`MAX_TRANSACTION_BYTES`] are checked against,
/// so callers that pack a batch can stay under them).
pub fn item_size(key: &ItemKey, value_len: usize) -> usize {
    PK.len()
        + key.pk.len()
        + SK.len()
        + key.sk.len()
        + VALUE.len()
        + value_len
        + VERSION.len()
        + VERSION_SIZE_BOUND
}

/// A [`MetaStore`] backed by one DynamoDB table. Cheap to clone (clones share the client and
/// the metrics).
#[derive(Debug, Clone)]
pub struct DynamoMetaStore {
    client: Client,
    table: Arc<str>,
    metrics: Arc<MetaStoreMetrics>,
}

/// The HTTP client of every AWS call: hyper 1 over rustls with the ring provider, trusting the
/// platform's root certificates.
fn https_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

impl DynamoMetaStore {
    /// Connects with credentials (and, if `config.region` is unset, the region) from the
    /// standard AWS chain. No DynamoDB request is sent yet: a wrong endpoint or missing
    /// credentials show up as [`MetaStoreError::Unavailable`] on the first call.
    pub async fn connect(config: DynamoConfig) -> Result<Self, DynamoSetupError> {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        Self::from_sdk_config(config, &sdk)
    }

    /// Builds the store on a prepared SDK configuration (credentials, region, HTTP client);
    /// `config`'s endpoint, region, timeouts and attempts override it. Without an HTTP client
    /// in `sdk`, the store's own (rustls) one is used.
    pub fn from_sdk_config(
        config: DynamoConfig,
        sdk: &SdkConfig,
    ) -> Result<Self, DynamoSetupError> {
        if !valid_table_name(&config.table_name) {
            return Err(DynamoSetupError::InvalidTableName(config.table_name));
        }
        let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts.max(1))
                    .with_initial_backoff(INITIAL_BACKOFF)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.request_timeout)
                    .operation_attempt_timeout(config.request_timeout)
                    // A hard bound on the whole call, whatever the retry strategy does.
                    .operation_timeout(config.max_call_duration())
                    .build(),
            );
        if sdk.http_client().is_none() {
            builder = builder.http_client(https_client());
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.region(Region::new(region.clone()));
        }
        let service_config = builder.build();
        if service_config.region().is_none() {
            return Err(DynamoSetupError::NoRegion);
        }
        Ok(DynamoMetaStore {
            client: Client::from_conf(service_config),
            table: config.table_name.into(),
            metrics: Arc::new(MetaStoreMetrics::new()),
        })
    }

    /// The table this store reads and writes.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Request counters of this store (shared by its clones).
    pub fn metrics(&self) -> &Arc<MetaStoreMetrics> {
        &self.metrics
    }

    /// Creates the table (on-demand billing) unless it exists, and waits until it is `ACTIVE`.
    /// Idempotent, also when several processes call it at once. An existing table must have
    /// this backend's key schema.
    pub async fn create_table_if_missing(&self) -> Result<(), DynamoSetupError> {
        if self.describe_table().await?.is_none() {
            let started = std::time::Instant::now();
            let result = self
                .client
                .create_table()
                .table_name(&*self.table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(attribute_definition(PK)?)
                .attribute_definitions(attribute_definition(SK)?)
                .key_schema(key_schema_element(PK, KeyType::Hash)?)
                .key_schema(key_schema_element(SK, KeyType::Range)?)
                .send()
                .await;
            self.metrics.observe(MetaStoreOp::Admin, started.elapsed());
            match result {
                Ok(_) => {
                    self.metrics.record(MetaStoreOp::Admin, Outcome::Ok, 0, 0);
                    tracing::info!(table = %self.table, "created DynamoDB table");
                }
                // Another process created it first.
                Err(e) if e.code() == Some("ResourceInUseException") => {
                    self.metrics.record(MetaStoreOp::Admin, Outcome::Ok, 0, 0);
                }
                Err(e) => {
                    self.metrics
                        .record(MetaStoreOp::Admin, Outcome::Error, 0, 0);
                    return Err(self.sdk_error("CreateTable", e).into());
                }
            }
        }

        let start = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let status = match self.describe_table().await? {
                Some(table) => {
                    check_key_schema(&self.table, &table)?;
                    table.table_status().cloned()
                }
                None => None,
            };
            if status == Some(TableStatus::Active) {
                return Ok(());
            }
            if start.elapsed() >= TABLE_ACTIVE_TIMEOUT {
                return Err(DynamoSetupError::NotActive {
                    table: self.table.to_string(),
                    waited: start.elapsed(),
                    status: status.map_or_else(|| "missing".to_owned(), |s| s.as_str().to_owned()),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// The table's description, `None` if it does not exist.
    async fn describe_table(&self) -> Result<Option<TableDescription>, MetaStoreError> {
        let started = std::time::Instant::now();
        let result = self
            .client
            .describe_table()
            .table_name(&*self.table)
            .send()
            .await;
        self.metrics.observe(MetaStoreOp::Admin, started.elapsed());
        match result {
            Ok(out) => {
                self.metrics.record(MetaStoreOp::Admin, Outcome::Ok, 0, 0);
                Ok(out.table)
            }
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                self.metrics.record(MetaStoreOp::Admin, Outcome::Ok, 0, 0);
                Ok(None)
            }
            Err(e) => {
                self.metrics
                    .record(MetaStoreOp::Admin, Outcome::Error, 0, 0);
                Err(self.sdk_error("DescribeTable", e))
            }
        }
    }

    /// Maps an SDK failure that is not a failed condition (those are handled by each caller).
    fn sdk_error<E>(&self, call: &str, err: SdkError<E, HttpResponse>) -> MetaStoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_owned);
        let detail = error_detail(&err);
        match code.as_deref() {
            Some("ResourceNotFoundException") => MetaStoreError::Unavailable(format!(
                "{call}: DynamoDB table {} does not exist (create it with `kafscale admin init`): {detail}",
                self.table
            )),
            // The request itself was wrong: retrying cannot help.
            Some("ValidationException" | "SerializationException") => MetaStoreError::InvalidBatch(
                format!("{call}: DynamoDB rejected the request: {detail}"),
            ),
            // Throttling, 5xx, transaction conflicts, credentials, timeouts, connection
            // failures: all may pass.
            _ => MetaStoreError::Unavailable(format!("{call}: {detail}")),
        }
    }

    /// Records a write's outcome and maps its error (a failed condition to operation `index`).
    fn finish_write<T, E>(
        &self,
        op: MetaStoreOp,
        call: &str,
        result: Result<T, SdkError<E, HttpResponse>>,
        index: usize,
        key: &ItemKey,
        items_written: u64,
    ) -> Result<(), MetaStoreError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match result {
            Ok(_) => {
                self.metrics.record(op, Outcome::Ok, 0, items_written);
                Ok(())
            }
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                self.metrics.record(op, Outcome::ConditionFailed, 0, 0);
                Err(MetaStoreError::ConditionFailed {
                    index,
                    key: key.clone(),
                })
            }
            Err(e) => {
                self.metrics.record(op, Outcome::Error, 0, 0);
                Err(self.sdk_error(call, e))
            }
        }
    }

    /// One `Put` or `Delete` as a single-item request.
    async fn write_one(&self, index: usize, op: &WriteOp) -> Result<(), MetaStoreError> {
        match op {
            WriteOp::Put {
                key,
                value,
                condition,
            } => {
                let (update, condition, names, values) =
                    put_expression(value, *condition).into_parts();
                let started = std::time::Instant::now();
                let result = self
                    .client
                    .update_item()
                    .table_name(&*self.table)
                    .set_key(Some(key_attributes(key)))
                    .update_expression(update)
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .send()
                    .await;
                self.metrics
                    .observe(MetaStoreOp::UpdateItem, started.elapsed());
                self.finish_write(MetaStoreOp::UpdateItem, "UpdateItem", result, index, key, 1)
            }
            WriteOp::Delete { key, condition } => {
                let (_, condition, names, values) = condition_expression(*condition).into_parts();
                let started = std::time::Instant::now();
                let result = self
                    .client
                    .delete_item()
                    .table_name(&*self.table)
                    .set_key(Some(key_attributes(key)))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .send()
                    .await;
                self.metrics
                    .observe(MetaStoreOp::DeleteItem, started.elapsed());
                self.finish_write(MetaStoreOp::DeleteItem, "DeleteItem", result, index, key, 1)
            }
            WriteOp::Check { .. } => self.write_transaction(&[(index, op)]).await,
        }
    }

    /// Operations (with their index in the caller's batch) as one transaction.
    async fn write_transaction(&self, ops: &[(usize, &WriteOp)]) -> Result<(), MetaStoreError> {
        let mut items = Vec::with_capacity(ops.len());
        for &(_, op) in ops {
            items.push(self.transact_item(op)?);
        }
        let written = ops
            .iter()
            .filter(|(_, op)| !matches!(op, WriteOp::Check { .. }))
            .count() as u64;
        let started = std::time::Instant::now();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .send()
            .await;
        self.metrics
            .observe(MetaStoreOp::TransactWriteItems, started.elapsed());
        let op = MetaStoreOp::TransactWriteItems;
        let err = match result {
            Ok(_) => {
                self.metrics.record(op, Outcome::Ok, 0, written);
                return Ok(());
            }
            Err(err) => err,
        };
        let reasons = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
                Some(e.cancellation_reasons().to_vec())
            }
            _ => None,
        };
        let Some(reasons) = reasons else {
            self.metrics.record(op, Outcome::Error, 0, 0);
            return Err(self.sdk_error("TransactWriteItems", err));
        };
        let mapped = cancellation_error(ops, &reasons, &error_detail(&err));
        let outcome = if matches!(mapped, MetaStoreError::ConditionFailed { .. }) {
            Outcome::ConditionFailed
        } else {
            Outcome::Error
        };
        self.metrics.record(op, outcome, 0, 0);
        Err(mapped)
    }

    fn transact_item(&self, op: &WriteOp) -> Result<TransactWriteItem, MetaStoreError> {
        let item = match op {
            WriteOp::Put {
                key,
                value,
                condition,
            } => {
                let (update, condition, names, values) =
                    put_expression(value, *condition).into_parts();
                let update = Update::builder()
                    .table_name(&*self.table)
                    .set_key(Some(key_attributes(key)))
                    .update_expression(update)
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(build_error)?;
                TransactWriteItem::builder().update(update).build()
            }
            WriteOp::Delete { key, condition } => {
                let (_, condition, names, values) = condition_expression(*condition).into_parts();
                let delete = Delete::builder()
                    .table_name(&*self.table)
                    .set_key(Some(key_attributes(key)))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(build_error)?;
                TransactWriteItem::builder().delete(delete).build()
            }
            WriteOp::Check { key, condition } => {
                let (_, condition, names, values) = condition_expression(*condition).into_parts();
                let check = ConditionCheck::builder()
                    .table_name(&*self.table)
                    .set_key(Some(key_attributes(key)))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(build_error)?;
                TransactWriteItem::builder().condition_check(check).build()
            }
        };
        Ok(item)
    }
}

#[async_trait]
impl MetaStore for DynamoMetaStore {
    async fn get(&self, key: &ItemKey) -> Result<Option<Item>, MetaStoreError> {
        if !valid_key(key) {
            // No such item can have been written.
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let result = self
            .client
            .get_item()
            .table_name(&*self.table)
            .set_key(Some(key_attributes(key)))
            .consistent_read(true)
            .send()
            .await;
        self.metrics
            .observe(MetaStoreOp::GetItem, started.elapsed());
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                self.metrics
                    .record(MetaStoreOp::GetItem, Outcome::Error, 0, 0);
                return Err(self.sdk_error("GetItem", e));
            }
        };
        let item = out.item.as_ref().map(parse_item).transpose()?;
        self.metrics.record(
            MetaStoreOp::GetItem,
            Outcome::Ok,
            u64::from(item.is_some()),
            0,
        );
        self.metrics
            .charge(MetaStoreOp::GetItem, capacity::get_units(item.as_ref()), 0);
        Ok(item)
    }

    async fn query(&self, query: Query) -> Result<Vec<Item>, MetaStoreError> {
        let Some(plan) = QueryPlan::new(&query) else {
            return Ok(Vec::new());
        };
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut start_key = None;
        loop {
            let remaining = limit - items.len();
            // Ask for the excluded bound items too, so that dropping them does not cost a page.
            let page_limit = remaining.saturating_add(plan.dropped_bounds());
            let started = std::time::Instant::now();
            let result = self
                .client
                .query()
                .table_name(&*self.table)
                .consistent_read(true)
                .key_condition_expression(&plan.expression)
                .set_expression_attribute_names(Some(plan.names.clone()))
                .set_expression_attribute_values(Some(plan.values.clone()))
                .scan_index_forward(query.direction == Direction::Forward)
                .set_limit(
                    query
                        .limit
                        .map(|_| i32::try_from(page_limit).unwrap_or(i32::MAX)),
                )
                .set_exclusive_start_key(start_key.take())
                .send()
                .await;
            self.metrics.observe(MetaStoreOp::Query, started.elapsed());
            let out = match result {
                Ok(out) => out,
                Err(e) => {
                    self.metrics
                        .record(MetaStoreOp::Query, Outcome::Error, 0, 0);
                    return Err(self.sdk_error("Query", e));
                }
            };
            let page = out.items.unwrap_or_default();
            self.metrics
                .record(MetaStoreOp::Query, Outcome::Ok, page.len() as u64, 0);
            let page = page.iter().map(parse_item).collect::<Result<Vec<_>, _>>()?;
            self.metrics
                .charge(MetaStoreOp::Query, capacity::query_page_units(&page), 0);
            for item in page {
                if item.key.pk != query.pk || !plan.admits(&item.key.sk) {
                    continue;
                }
                items.push(item);
                if items.len() == limit {
                    return Ok(items);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start_key = Some(key),
                _ => return Ok(items),
            }
        }
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), MetaStoreError> {
        validate_batch(&ops, MAX_BATCH_OPS)?;
        let mut total = 0usize;
        for op in &ops {
            let key = op.key();
            if !valid_key(key) {
                return Err(MetaStoreError::InvalidBatch(format!(
                    "key {key:?}: DynamoDB keys must be non-empty, with pk at most {MAX_PK_BYTES} and sk at most {MAX_SK_BYTES} bytes"
                )));
            }
            let value_len = match op {
                WriteOp::Put { value, .. } => value.len(),
                _ => 0,
            };
            let size = item_size(key, value_len);
            if size > MAX_ITEM_BYTES {
                return Err(MetaStoreError::InvalidBatch(format!(
                    "item {key:?} would take {size} bytes, more than DynamoDB's {MAX_ITEM_BYTES}-byte item limit (the value may have at most {} bytes)",
                    max_value_len(key)
                )));
            }
            total += size;
        }
        if total > MAX_TRANSACTION_BYTES {
            return Err(MetaStoreError::InvalidBatch(format!(
                "the batch's items take up to {total} bytes, more than DynamoDB's {MAX_TRANSACTION_BYTES}-byte transaction limit"
            )));
        }

        // A check without a condition constrains nothing, and DynamoDB requires one.
        let effective: Vec<(usize, &WriteOp)> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| {
                !matches!(
                    op,
                    WriteOp::Check {
                        condition: Condition::None,
                        ..
                    }
                )
            })
            .collect();
        let result = match effective.as_slice() {
            [] => return Ok(()),
            [(index, op)] => self.write_one(*index, op).await,
            _ => self.write_transaction(&effective).await,
        };
        if result.is_ok() {
            let sent: Vec<&WriteOp> = effective.iter().map(|(_, op)| *op).collect();
            self.metrics.charge_write(&WriteCharge::of(&sent));
        }
        result
    }

    fn max_batch_ops(&self) -> usize {
        MAX_BATCH_OPS
    }
}

/// DynamoDB table names: 3 to 255 of `a-z A-Z 0-9 _ - .`.
fn valid_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether DynamoDB can store an item under `key`.
fn valid_key(key: &ItemKey) -> bool {
    !key.pk.is_empty()
        && !key.sk.is_empty()
        && key.pk.len() <= MAX_PK_BYTES
        && key.sk.len() <= MAX_SK_BYTES
}

fn key_attributes(key: &ItemKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(key.pk.clone())),
        (SK.to_owned(), AttributeValue::S(key.sk.clone())),
    ])
}

/// Decodes a stored item; anything not written by this backend is [`MetaStoreError::Corrupt`].
fn parse_item(attributes: &HashMap<String, AttributeValue>) -> Result<Item, MetaStoreError> {
    let string = |name: &str| match attributes.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    };
    let (Some(pk), Some(sk)) = (string(PK), string(SK)) else {
        return Err(MetaStoreError::Corrupt {
            key: ItemKey::new(
                string(PK).unwrap_or_default(),
                string(SK).unwrap_or_default(),
            ),
            reason: "item without string pk and sk attributes".to_owned(),
        });
    };
    let key = ItemKey { pk, sk };
    let corrupt = |key: ItemKey, reason: String| MetaStoreError::Corrupt { key, reason };
    let value = match attributes.get(VALUE) {
        Some(AttributeValue::B(blob)) => Bytes::copy_from_slice(blob.as_ref()),
        other => {
            return Err(corrupt(
                key,
                format!("attribute {VALUE} is {other:?}, expected a binary value"),
            ));
        }
    };
    let version = match attributes.get(VERSION) {
        Some(AttributeValue::N(n)) => match n.parse::<u64>() {
            Ok(version) if version >= 1 => version,
            _ => {
                return Err(corrupt(
                    key,
                    format!("attribute {VERSION} is {n:?}, expected a positive integer"),
                ));
            }
        },
        other => {
            return Err(corrupt(
                key,
                format!("attribute {VERSION} is {other:?}, expected a number"),
            ));
        }
    };
    Ok(Item {
        key,
        value,
        version,
    })
}

/// The expressions of one write: a condition plus, for puts, the update.
struct Expressions {
    update: String,
    condition: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

/// An update expression (empty for a delete or check), a condition, and the name and value
/// placeholders, as the request builders take them.
type ExpressionParts = (
    String,
    Option<String>,
    Option<HashMap<String, String>>,
    Option<HashMap<String, AttributeValue>>,
);

impl Expressions {
    /// DynamoDB rejects empty (and unused) name/value maps, so empty ones become `None`.
    fn into_parts(self) -> ExpressionParts {
        (
            self.update,
            self.condition,
            (!self.names.is_empty()).then_some(self.names),
            (!self.values.is_empty()).then_some(self.values),
        )
    }
}

/// The condition expression of `condition` (attribute names go through placeholders, so no
/// name can clash with DynamoDB's reserved words).
fn condition_expression(condition: Condition) -> Expressions {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let condition = match condition {
        Condition::None => None,
        Condition::Absent => {
            names.insert("#pk".to_owned(), PK.to_owned());
            Some("attribute_not_exists(#pk)".to_owned())
        }
        Condition::Exists => {
            names.insert("#pk".to_owned(), PK.to_owned());
            Some("attribute_exists(#pk)".to_owned())
        }
        Condition::Version(n) => {
            names.insert("#ver".to_owned(), VERSION.to_owned());
            values.insert(":expected".to_owned(), AttributeValue::N(n.to_string()));
            Some("#ver = :expected".to_owned())
        }
    };
    Expressions {
        update: String::new(),
        condition,
        names,
        values,
    }
}

/// A put: set the value and increment the version (from 0 if the item is new) in one step.
fn put_expression(value: &Bytes, condition: Condition) -> Expressions {
    let mut expr = condition_expression(condition);
    expr.update = "SET #v = :v, #ver = if_not_exists(#ver, :zero) + :one".to_owned();
    expr.names.insert("#v".to_owned(), VALUE.to_owned());
    expr.names.insert("#ver".to_owned(), VERSION.to_owned());
    expr.values.insert(
        ":v".to_owned(),
        AttributeValue::B(Blob::new(value.to_vec())),
    );
    expr.values
        .insert(":zero".to_owned(), AttributeValue::N("0".to_owned()));
    expr.values
        .insert(":one".to_owned(), AttributeValue::N("1".to_owned()));
    expr
}

/// The error of a cancelled transaction: the first failed condition if there is one.
fn cancellation_error(
    ops: &[(usize, &WriteOp)],
    reasons: &[CancellationReason],
    detail: &str,
) -> MetaStoreError {
    let code_at = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
    for (i, (index, op)) in ops.iter().enumerate() {
        if code_at(i) == "ConditionalCheckFailed" {
            return MetaStoreError::ConditionFailed {
                index: *index,
                key: op.key().clone(),
            };
        }
    }
    let codes: Vec<String> = reasons
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let code = r.code().unwrap_or("None");
            (code != "None").then(|| {
                let index = ops.get(i).map_or(i, |(index, _)| *index);
                format!("operation {index}: {code} ({})", r.message().unwrap_or(""))
            })
        })
        .collect();
    if reasons.iter().any(|r| r.code() == Some("ValidationError")) {
        MetaStoreError::InvalidBatch(format!("TransactWriteItems rejected: {}", codes.join("; ")))
    } else {
        // TransactionConflict, ThrottlingError, ProvisionedThroughputExceeded, ...: retryable.
        MetaStoreError::Unavailable(format!(
            "TransactWriteItems cancelled: {}; {detail}",
            codes.join("; ")
        ))
    }
}

/// A one-line description: the service's error code and message, or the chain of causes of a
/// timeout or connection failure (the SDK's `Debug` output includes the whole raw response).
fn error_detail<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) => format!(
            "{} (HTTP {}): {}",
            err.code().unwrap_or("unknown error"),
            service.raw().status().as_u16(),
            err.message().unwrap_or("no message")
        ),
        _ => DisplayErrorContext(err).to_string(),
    }
}

fn build_error(e: BuildError) -> MetaStoreError {
    MetaStoreError::InvalidBatch(format!("could not build a DynamoDB request: {e}"))
}

fn attribute_definition(name: &str) -> Result<AttributeDefinition, MetaStoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(build_error)
}

fn key_schema_element(name: &str, key_type: KeyType) -> Result<KeySchemaElement, MetaStoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(build_error)
}

/// An existing table must be keyed (pk: S, HASH; sk: S, RANGE).
fn check_key_schema(table: &str, description: &TableDescription) -> Result<(), DynamoSetupError> {
    let mut schema: Vec<(String, String)> = description
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    schema.sort();
    let types: HashMap<&str, String> = description
        .attribute_definitions()
        .iter()
        .map(|d| (d.attribute_name(), d.attribute_type().as_str().to_owned()))
        .collect();
    let expected = [
        (PK.to_owned(), KeyType::Hash.as_str().to_owned()),
        (SK.to_owned(), KeyType::Range.as_str().to_owned()),
    ];
    let string_typed = [PK, SK]
        .iter()
        .all(|name| types.get(name).map(String::as_str) == Some(ScalarAttributeType::S.as_str()));
    if schema == expected && string_typed {
        Ok(())
    } else {
        Err(DynamoSetupError::WrongKeySchema {
            table: table.to_owned(),
            found: format!("{schema:?}, attribute types {types:?}"),
        })
    }
}

/// A [`Query`] as a DynamoDB key condition, plus the bound items to drop client-side.
struct QueryPlan {
    expression: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    /// Sort keys that `BETWEEN` returns but the query excludes.
    excluded: Vec<String>,
}

impl QueryPlan {
    /// `None` when the query cannot match anything (an empty range, `limit` 0, or keys that
    /// DynamoDB cannot hold).
    fn new(query: &Query) -> Option<QueryPlan> {
        if query.limit == Some(0) || query.pk.is_empty() || query.pk.len() > MAX_PK_BYTES {
            return None;
        }
        // No stored sort key is empty: a start bound of "" is no bound, and an end bound of ""
        // leaves nothing. (DynamoDB rejects empty strings in key conditions.)
        let start = match &query.start {
            Bound::Included(s) | Bound::Excluded(s) if s.is_empty() => Bound::Unbounded,
            other => other.clone(),
        };
        let end = match &query.end {
            Bound::Included(e) | Bound::Excluded(e) if e.is_empty() => return None,
            other => other.clone(),
        };
        if is_empty_range(&start, &end) {
            return None;
        }

        let mut names = HashMap::from([("#pk".to_owned(), PK.to_owned())]);
        let mut values = HashMap::from([(":pk".to_owned(), AttributeValue::S(query.pk.clone()))]);
        let mut excluded = Vec::new();
        let sk_condition = match (&start, &end) {
            (Bound::Unbounded, Bound::Unbounded) => None,
            (Bound::Included(s), Bound::Unbounded) => Some(("#sk >= :start", Some(s), None)),
            (Bound::Excluded(s), Bound::Unbounded) => Some(("#sk > :start", Some(s), None)),
            (Bound::Unbounded, Bound::Included(e)) => Some(("#sk <= :end", None, Some(e))),
            (Bound::Unbounded, Bound::Excluded(e)) => Some(("#sk < :end", None, Some(e))),
            (Bound::Included(s), Bound::Included(e)) if s == e => {
                Some(("#sk = :start", Some(s), None))
            }
            (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
                if let Bound::Excluded(s) = &start {
                    excluded.push(s.clone());
                }
                if let Bound::Excluded(e) = &end {
                    excluded.push(e.clone());
                }
                Some(("#sk BETWEEN :start AND :end", Some(s), Some(e)))
            }
        };
        let mut expression = "#pk = :pk".to_owned();
        if let Some((condition, s, e)) = sk_condition {
            expression.push_str(" AND ");
            expression.push_str(condition);
            names.insert("#sk".to_owned(), SK.to_owned());
            if let Some(s) = s {
                values.insert(":start".to_owned(), AttributeValue::S(s.clone()));
            }
            if let Some(e) = e {
                values.insert(":end".to_owned(), AttributeValue::S(e.clone()));
            }
        }
        Some(QueryPlan {
            expression,
            names,
            values,
            excluded,
        })
    }

    /// How many returned items may be dropped (so a page asks for that many more).
    fn dropped_bounds(&self) -> usize {
        self.excluded.len()
    }

    /// Whether a returned sort key belongs to the query's range.
    fn admits(&self, sk: &str) -> bool {
        !self.excluded.iter().any(|e| e == sk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(start: Bound<&str>, end: Bound<&str>) -> Query {
        Query {
            pk: "p".to_owned(),
            start: start.map(str::to_owned),
            end: end.map(str::to_owned),
            direction: Direction::Forward,
            limit: None,
        }
    }

    #[test]
    fn key_conditions() {
        use Bound::{Excluded as E, Included as I, Unbounded as U};
        let cases = [
            (U, U, "#pk = :pk", 0),
            (I("a"), U, "#pk = :pk AND #sk >= :start", 0),
            (E("a"), U, "#pk = :pk AND #sk > :start", 0),
            (U, I("b"), "#pk = :pk AND #sk <= :end", 0),
            (U, E("b"), "#pk = :pk AND #sk < :end", 0),
            (I("a"), I("a"), "#pk = :pk AND #sk = :start", 0),
            (
                I("a"),
                I("b"),
                "#pk = :pk AND #sk BETWEEN :start AND :end",
                0,
            ),
            (
                E("a"),
                I("b"),
                "#pk = :pk AND #sk BETWEEN :start AND :end",
                1,
            ),
            (
                E("a"),
                E("b"),
                "#pk = :pk AND #sk BETWEEN :start AND :end",
                2,
            ),
            // "" bounds: no item has an empty sort key.
            (I(""), U, "#pk = :pk", 0),
            (E(""), I("b"), "#pk = :pk AND #sk <= :end", 0),
        ];
        for (start, end, expression, dropped) in cases {
            let plan = QueryPlan::new(&query(start, end)).expect("a plan");
            assert_eq!(plan.expression, expression, "{start:?}..{end:?}");
            assert_eq!(plan.dropped_bounds(), dropped, "{start:?}..{end:?}");
            // Every placeholder that is defined is used, and the other way round.
            for name in plan.names.keys().chain(plan.values.keys()) {
                assert!(plan.expression.contains(name.as_str()), "{name} is used");
            }
        }
        let plan = QueryPlan::new(&query(E("a"), E("c"))).expect("a plan");
        assert!(!plan.admits("a") && plan.admits("b") && !plan.admits("c"));

        for (start, end) in [(I("b"), I("a")), (E("a"), I("a")), (U, I("")), (U, E(""))] {
            assert!(
                QueryPlan::new(&query(start, end)).is_none(),
                "{start:?}..{end:?}"
            );
        }
        let mut q = query(U, U);
        q.limit = Some(0);
        assert!(QueryPlan::new(&q).is_none(), "limit 0");
        q.limit = None;
        q.pk = String::new();
        assert!(QueryPlan::new(&q).is_none(), "empty pk");
    }

    #[test]
    fn write_expressions_use_what_they_define() {
        for condition in [
            Condition::None,
            Condition::Absent,
            Condition::Exists,
            Condition::Version(7),
        ] {
            let put = put_expression(&Bytes::from_static(b"x"), condition);
            let text = format!(
                "{} {}",
                put.update,
                put.condition.clone().unwrap_or_default()
            );
            for name in put.names.keys().chain(put.values.keys()) {
                assert!(
                    text.contains(name.as_str()),
                    "{condition:?}: {name} is used"
                );
            }
            let cond = condition_expression(condition);
            let text = cond.condition.clone().unwrap_or_default();
            for name in cond.names.keys().chain(cond.values.keys()) {
                assert!(
                    text.contains(name.as_str()),
                    "{condition:?}: {name} is used"
                );
            }
            let (_, condition, names, values) = cond.into_parts();
            assert_eq!(condition.is_none(), names.is_none());
            assert!(values.is_none() || condition.is_some());
        }
    }

    #[test]
    fn items_parse_strictly() {
        let key = ItemKey::new("p", "s");
        let mut attributes = key_attributes(&key);
        attributes.insert(
            VALUE.to_owned(),
            AttributeValue::B(Blob::new(b"hi".to_vec())),
        );
        attributes.insert(VERSION.to_owned(), AttributeValue::N("3".to_owned()));
        assert_eq!(
            parse_item(&attributes).expect("a valid item"),
            Item {
                key: key.clone(),
                value: Bytes::from_static(b"hi"),
                version: 3
            }
        );
        for (name, bad) in [
            (VERSION, AttributeValue::N("0".to_owned())),
            (VERSION, AttributeValue::N("-1".to_owned())),
            (VERSION, AttributeValue::N("1.5".to_owned())),
            (VERSION, AttributeValue::S("1".to_owned())),
            (VALUE, AttributeValue::S("hi".to_owned())),
            (PK, AttributeValue::N("1".to_owned())),
        ] {
            let mut broken = attributes.clone();
            broken.insert(name.to_owned(), bad.clone());
            assert!(
                matches!(parse_item(&broken), Err(MetaStoreError::Corrupt { .. })),
                "{name} = {bad:?} is corrupt"
            );
        }
        let mut missing = attributes.clone();
        missing.remove(VALUE);
        assert!(matches!(
            parse_item(&missing),
            Err(MetaStoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn limits() {
        let key = ItemKey::new("pk", "sk");
        assert_eq!(item_size(&key, max_value_len(&key)), MAX_ITEM_BYTES);
        assert_eq!(
            max_value_len(&ItemKey::new("p".repeat(MAX_ITEM_BYTES), "s")),
            0
        );
        assert!(valid_key(&key));
        assert!(!valid_key(&ItemKey::new("", "s")));
        assert!(!valid_key(&ItemKey::new("p", "")));
        assert!(!valid_key(&ItemKey::new("p".repeat(MAX_PK_BYTES + 1), "s")));
        assert!(!valid_key(&ItemKey::new("p", "s".repeat(MAX_SK_BYTES + 1))));
        assert!(valid_table_name("kafscale"));
        assert!(valid_table_name("prod.kafscale-1_x"));
        assert!(!valid_table_name("ks"));
        assert!(!valid_table_name("bad/name"));
        let config = DynamoConfig {
            request_timeout: Duration::from_secs(1),
            max_attempts: 3,
            ..DynamoConfig::with_table_prefix("t-")
        };
        assert_eq!(config.table_name, "t-kafscale");
        assert_eq!(
            config.max_call_duration(),
            Duration::from_secs(3) + MAX_BACKOFF * 2
        );
    }

    #[test]
    fn cancellation_reasons_map_to_the_first_failed_condition() {
        let key = |s: &str| ItemKey::new("p", s);
        let ops = [
            WriteOp::Check {
                key: key("a"),
                condition: Condition::Exists,
            },
            WriteOp::Delete {
                key: key("b"),
                condition: Condition::Absent,
            },
            WriteOp::Delete {
                key: key("c"),
                condition: Condition::Absent,
            },
        ];
        // The caller's batch had a condition-free check at index 1, which was not sent.
        let sent: Vec<(usize, &WriteOp)> = vec![(0, &ops[0]), (2, &ops[1]), (3, &ops[2])];
        let reason = |code: &str| CancellationReason::builder().code(code).build();
        let err = cancellation_error(
            &sent,
            &[
                reason("None"),
                reason("ConditionalCheckFailed"),
                reason("ConditionalCheckFailed"),
            ],
            "",
        );
        assert!(
            matches!(&err, MetaStoreError::ConditionFailed { index: 2, key: k } if *k == key("b")),
            "{err:?}"
        );
        let err = cancellation_error(&sent, &[reason("None"), reason("TransactionConflict")], "");
        assert!(err.is_retryable(), "{err:?}");
        let err = cancellation_error(&sent, &[reason("ThrottlingError")], "");
        assert!(err.is_retryable(), "{err:?}");
        let err = cancellation_error(&sent, &[reason("ValidationError")], "");
        assert!(matches!(err, MetaStoreError::InvalidBatch(_)), "{err:?}");
        let err = cancellation_error(&sent, &[], "no reasons");
        assert!(err.is_retryable(), "{err:?}");
    }
}
