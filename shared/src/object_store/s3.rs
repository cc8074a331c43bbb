//! An [`ObjectStore`] on Amazon S3 or an S3-compatible server, for distributed mode.
//!
//! In distributed mode no broker has a disk, so segments must live where every tier can read
//! them: an S3 bucket. The trait maps onto S3 one-to-one, with these choices:
//!
//! - **Create-only puts** use a conditional write, `If-None-Match: *` (412 → `AlreadyExists`),
//!   on `PutObject` and, for objects above `multipart_threshold`, on `CompleteMultipartUpload`.
//!   The metadata store stays the fencing authority; this is the safety net that keeps a retried
//!   or duplicated upload from replacing an object a reader may already use. A put whose earlier
//!   attempt failed ambiguously (timeout, dropped connection, 5xx) and whose retry then meets
//!   412 may be looking at its own first attempt, so only then it reads the object back and
//!   answers `Ok` if the bytes are its own. A failed multipart upload is aborted (also when the
//!   future is dropped); a bucket lifecycle rule for incomplete uploads is still advisable.
//!   One concession to the test server: moto 5.2 misnames the root element of a successful
//!   `CompleteMultipartUpload` answer, which the SDK refuses; such a 200 counts as success.
//! - **Retries are ours, not the SDK's.** The SDK's retry loop is disabled and every request
//!   runs in one loop with exponential backoff and jitter, bounded by `max_attempts` and
//!   `operation_timeout`, and each attempt by `request_timeout`, *including* reading the body
//!   (the SDK's own timeouts stop at the response headers). One loop also means we know when a
//!   put was retried, can retry a conditional-write conflict (409), a truncated body, or the
//!   failed keys of a DeleteObjects, and count every attempt in [`ObjectStoreMetrics`].
//! - **Errors**: answers that are part of the contract (404, 412, 416) become `NotFound`,
//!   `AlreadyExists`, `InvalidRange`; throttling, 5xx, timeouts, conflicts and transport failures
//!   become the retryable `Io`; everything else (403, `NoSuchBucket`, a wrong region, an
//!   unsupported feature) is `Rejected`, which retrying will not fix.
//! - **Ranged reads** send one GET with `Range: bytes=a-(b-1)`; S3 answers a range that runs past
//!   the end with the bytes it has, so the `Content-Range` total decides `InvalidRange`. An empty
//!   or reversed range cannot be expressed in HTTP, so it costs a HEAD (the trait still requires
//!   `NotFound` and bounds checks for it).
//! - **Credentials** come from the standard AWS chain (environment, profile, web identity, ECS,
//!   instance metadata) unless [`S3Config::credentials`] gives static keys.
//! - **Transport**: hyper with rustls on *ring*, the only TLS stack compiled in (see the
//!   workspace `Cargo.toml`).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::memory::check_range;
use super::{ObjectMeta, ObjectStore, ObjectStoreError, ObjectStoreMetrics, ObjectStoreOp};

/// S3's smallest part size (except for the last part).
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part size.
const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's largest part count.
const MAX_PARTS: u64 = 10_000;
/// S3's largest key, in bytes.
const MAX_KEY_LEN: usize = 1024;
/// S3's limit of keys per ListObjectsV2 page and per DeleteObjects request.
const MAX_BATCH: usize = 1000;

/// Fixed access keys, instead of the standard credential chain.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where and how an [`S3ObjectStore`] talks to S3. Start from [`S3Config::new`].
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket holding every object.
    pub bucket: String,
    /// Prepended to every key (e.g. `"cluster-a/"`), so several clusters can share a bucket.
    /// Keys reported by `list` are without it.
    pub prefix: Option<String>,
    /// Endpoint URL of an S3-compatible server (e.g. `http://127.0.0.1:9000`); `None` is AWS.
    pub endpoint: Option<String>,
    /// Signing region, e.g. `us-east-1`.
    pub region: String,
    /// Path-style URLs (`endpoint/bucket/key`), which most S3-compatible servers need, instead
    /// of virtual-hosted ones (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Static credentials; `None` uses the standard AWS chain (env `AWS_ACCESS_KEY_ID`/
    /// `AWS_SECRET_ACCESS_KEY`, profile, web identity, ECS, instance metadata).
    pub credentials: Option<S3Credentials>,
    /// Longest time to establish a connection.
    pub connect_timeout: Duration,
    /// Longest time one attempt of one request may take, body included.
    pub request_timeout: Duration,
    /// Longest time one request may take with all its retries and backoff. A listing or a
    /// multipart upload makes several requests, each bounded by this.
    pub operation_timeout: Duration,
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the first retry; it doubles per retry up to `max_backoff`, with jitter.
    pub initial_backoff: Duration,
    /// Longest backoff between two attempts.
    pub max_backoff: Duration,
    /// Objects larger than this many bytes are uploaded in parts.
    pub multipart_threshold: u64,
    /// Size of each part but the last (5 MiB ..= 5 GiB, S3's limits).
    pub multipart_part_size: u64,
    /// Parts uploaded at the same time.
    pub multipart_concurrency: usize,
    /// Keys per ListObjectsV2 page (1..=1000).
    pub list_page_size: usize,
    /// Keys per DeleteObjects request (1..=1000).
    pub delete_batch_size: usize,
}

impl S3Config {
    /// A configuration for `bucket` in `region` with defaults sized for segment objects of a few
    /// MiB: 3 s to connect, 30 s per attempt, 120 s per request, 4 attempts with backoff from
    /// 100 ms to 5 s, multipart above 16 MiB in 8 MiB parts (4 at a time), S3's maximum page
    /// and batch of 1000 keys, AWS's endpoint with virtual-hosted URLs, the standard credential
    /// chain, and no key prefix.
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            prefix: None,
            endpoint: None,
            region: region.into(),
            path_style: false,
            credentials: None,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(120),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multipart_threshold: 16 * 1024 * 1024,
            multipart_part_size: 8 * 1024 * 1024,
            multipart_concurrency: 4,
            list_page_size: MAX_BATCH,
            delete_batch_size: MAX_BATCH,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.bucket.is_empty() {
            return Err("bucket is empty".into());
        }
        if self.region.is_empty() {
            return Err("region is empty".into());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.request_timeout.is_zero() || self.operation_timeout.is_zero() {
            return Err("timeouts must be positive".into());
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.multipart_part_size) {
            return Err(format!(
                "multipart_part_size {} is outside S3's {MIN_PART_SIZE}..={MAX_PART_SIZE}",
                self.multipart_part_size
            ));
        }
        if self.multipart_concurrency == 0 {
            return Err("multipart_concurrency must be at least 1".into());
        }
        if !(1..=MAX_BATCH).contains(&self.list_page_size) {
            return Err(format!("list_page_size must be in 1..={MAX_BATCH}"));
        }
        if !(1..=MAX_BATCH).contains(&self.delete_batch_size) {
            return Err(format!("delete_batch_size must be in 1..={MAX_BATCH}"));
        }
        if self.prefix.as_ref().is_some_and(|p| p.len() >= MAX_KEY_LEN) {
            return Err(format!("prefix must be shorter than {MAX_KEY_LEN} bytes"));
        }
        Ok(())
    }
}

/// An [`ObjectStore`] that keeps each object as an S3 object (see the module docs).
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    client: Client,
    config: Arc<S3Config>,
    metrics: Arc<ObjectStoreMetrics>,
}

impl S3ObjectStore {
    /// Builds a client for `config`. No request is sent: a wrong bucket or missing credentials
    /// show up as [`ObjectStoreError::Rejected`] on the first call. An invalid configuration is
    /// `Rejected` here.
    pub async fn new(config: S3Config) -> Result<Self, ObjectStoreError> {
        config
            .validate()
            .map_err(|reason| ObjectStoreError::Rejected {
                key: format!("s3://{}", config.bucket),
                reason: format!("invalid S3 configuration: {reason}"),
            })?;
        let http = https_client();
        let region = Region::new(config.region.clone());
        let behavior = BehaviorVersion::v2026_01_12();
        let mut builder = match &config.credentials {
            Some(c) => aws_sdk_s3::config::Builder::new()
                .behavior_version(behavior)
                .credentials_provider(Credentials::new(
                    c.access_key_id.clone(),
                    c.secret_access_key.clone(),
                    c.session_token.clone(),
                    None,
                    "kafscale-s3-config",
                )),
            None => {
                let shared = aws_config::defaults(behavior)
                    .region(region.clone())
                    .http_client(http.clone())
                    .load()
                    .await;
                aws_sdk_s3::config::Builder::from(&shared)
            }
        };
        builder = builder
            .region(region)
            .http_client(http)
            .force_path_style(config.path_style)
            // One retry loop, ours (see the module docs).
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(S3ObjectStore {
            client: Client::from_conf(builder.build()),
            config: Arc::new(config),
            metrics: Arc::new(ObjectStoreMetrics::new()),
        })
    }

    /// Request counters per operation, shared with whoever exports them.
    pub fn metrics(&self) -> &Arc<ObjectStoreMetrics> {
        &self.metrics
    }

    /// The configuration this store was built with.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Creates the bucket unless it exists (`kafscale admin init --create-bucket`; in
    /// production the bucket usually comes from Terraform). Idempotent; a bucket owned by
    /// someone else is `Rejected`.
    pub async fn create_bucket_if_missing(&self) -> Result<(), ObjectStoreError> {
        let bucket = &self.config.bucket;
        let key = format!("s3://{bucket}");
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(map_error(&key, "HeadBucket", e)),
        }
        let mut request = self.client.create_bucket().bucket(bucket);
        // us-east-1 is the one region that takes no location constraint.
        if self.config.region != "us-east-1" {
            request = request.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        self.config.region.as_str(),
                    ))
                    .build(),
            );
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(map_error(&key, "CreateBucket", e)),
        }
    }

    /// The S3 key of a trait key: the prefix and the key.
    fn full_key(&self, key: &str) -> Result<String, ObjectStoreError> {
        if key.is_empty() {
            return Err(ObjectStoreError::InvalidKey {
                key: key.to_owned(),
                reason: "empty key",
            });
        }
        let full = match &self.config.prefix {
            Some(prefix) => format!("{prefix}{key}"),
            None => key.to_owned(),
        };
        if full.len() > MAX_KEY_LEN {
            return Err(ObjectStoreError::InvalidKey {
                key: key.to_owned(),
                reason: "longer than S3's 1024 bytes (with the prefix)",
            });
        }
        Ok(full)
    }

    fn prefix(&self) -> &str {
        self.config.prefix.as_deref().unwrap_or("")
    }

    fn retry<'a>(&'a self, op: ObjectStoreOp, key: &'a str) -> Retry<'a> {
        Retry {
            store: self,
            op,
            key,
            attempt: 1,
            retried_after_failure: false,
            deadline: Instant::now() + self.config.operation_timeout,
        }
    }

    async fn single_put(
        &self,
        key: &str,
        full: &str,
        data: &Bytes,
    ) -> Result<(), ObjectStoreError> {
        let mut retry = self.retry(ObjectStoreOp::Put, key);
        loop {
            let sent = retry
                .attempt(async {
                    self.metrics
                        .bytes_out(ObjectStoreOp::Put, data.len() as u64);
                    self.client
                        .put_object()
                        .bucket(&self.config.bucket)
                        .key(full)
                        .if_none_match("*")
                        .content_length(data.len() as i64)
                        .body(ByteStream::from(data.clone()))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| match status(&e) {
                            Some(412) => already_exists(key),
                            _ => map_error(key, "PutObject", e),
                        })
                })
                .await;
            match sent {
                Err(ObjectStoreError::AlreadyExists { .. }) if retry.retried_after_failure => {
                    return self.settle_ambiguous_put(key, data).await;
                }
                Err(e) => retry.backoff(e).await?,
                Ok(()) => return Ok(()),
            }
        }
    }

    /// After a retried put met an existing object: our own earlier attempt may have landed
    /// before its answer was lost. The object is ours if it holds exactly our bytes.
    async fn settle_ambiguous_put(&self, key: &str, data: &Bytes) -> Result<(), ObjectStoreError> {
        let stored = self.get(key).await?;
        if stored == *data {
            tracing::debug!(key, "retried put found its own earlier attempt stored");
            Ok(())
        } else {
            Err(already_exists(key))
        }
    }

    async fn multipart_put(
        &self,
        key: &str,
        full: &str,
        data: &Bytes,
    ) -> Result<(), ObjectStoreError> {
        let part_size = self.config.multipart_part_size;
        let len = data.len() as u64;
        let parts = len.div_ceil(part_size);
        if parts > MAX_PARTS {
            return Err(ObjectStoreError::Rejected {
                key: key.to_owned(),
                reason: format!(
                    "{len} bytes need {parts} parts of {part_size} bytes; S3 allows {MAX_PARTS}"
                ),
            });
        }

        let mut retry = self.retry(ObjectStoreOp::Put, key);
        let upload_id = loop {
            let created = retry
                .attempt(async {
                    let out = self
                        .client
                        .create_multipart_upload()
                        .bucket(&self.config.bucket)
                        .key(full)
                        .send()
                        .await
                        .map_err(|e| map_error(key, "CreateMultipartUpload", e))?;
                    out.upload_id()
                        .map(str::to_owned)
                        .ok_or_else(|| invalid_data(key, "CreateMultipartUpload without UploadId"))
                })
                .await;
            match created {
                Ok(id) => break id,
                Err(e) => retry.backoff(e).await?,
            }
        };
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.config.bucket.clone(),
            key: full.to_owned(),
            upload_id: Some(upload_id.clone()),
        };

        let result = self
            .upload_parts_and_complete(key, full, &upload_id, data, parts)
            .await;
        match result {
            Ok(()) => {
                guard.upload_id = None;
                Ok(())
            }
            Err(e) => {
                guard.upload_id = None;
                self.abort_multipart(key, full, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn upload_parts_and_complete(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        data: &Bytes,
        parts: u64,
    ) -> Result<(), ObjectStoreError> {
        let part_size = self.config.multipart_part_size;
        let completed: Vec<CompletedPart> = futures::stream::iter(0..parts)
            .map(|i| {
                // Both bounds are <= data.len(), a usize, so the casts cannot truncate.
                let start = (i * part_size) as usize;
                let end = ((i + 1) * part_size).min(data.len() as u64) as usize;
                // Part numbers are 1..=10_000, checked above.
                self.upload_part(key, full, upload_id, i as i32 + 1, data.slice(start..end))
            })
            .buffered(self.config.multipart_concurrency)
            .try_collect()
            .await?;

        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(completed))
            .build();
        let mut retry = self.retry(ObjectStoreOp::Put, key);
        loop {
            let done = retry
                .attempt(async {
                    self.client
                        .complete_multipart_upload()
                        .bucket(&self.config.bucket)
                        .key(full)
                        .upload_id(upload_id)
                        .if_none_match("*")
                        .multipart_upload(upload.clone())
                        .send()
                        .await
                        .map(|_| ())
                        .or_else(|e| match (status(&e), code(&e)) {
                            _ if is_misnamed_complete_success(&e) => Ok(()),
                            (Some(412), _) => Err(already_exists(key)),
                            // A retry after the first completion landed finds no upload.
                            (Some(404), Some("NoSuchUpload")) => Err(not_found(key)),
                            _ => Err(map_error(key, "CompleteMultipartUpload", e)),
                        })
                })
                .await;
            match done {
                Ok(()) => return Ok(()),
                Err(ObjectStoreError::AlreadyExists { .. } | ObjectStoreError::NotFound { .. })
                    if retry.retried_after_failure =>
                {
                    return self.settle_ambiguous_put(key, data).await;
                }
                Err(ObjectStoreError::NotFound { .. }) => {
                    return Err(ObjectStoreError::Rejected {
                        key: key.to_owned(),
                        reason: format!("multipart upload {upload_id} vanished before completion"),
                    });
                }
                Err(e) => retry.backoff(e).await?,
            }
        }
    }

    async fn upload_part(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<CompletedPart, ObjectStoreError> {
        let mut retry = self.retry(ObjectStoreOp::Put, key);
        loop {
            let sent = retry
                .attempt(async {
                    self.metrics
                        .bytes_out(ObjectStoreOp::Put, body.len() as u64);
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.config.bucket)
                        .key(full)
                        .upload_id(upload_id)
                        .part_number(number)
                        .content_length(body.len() as i64)
                        .body(ByteStream::from(body.clone()))
                        .send()
                        .await
                        .map_err(|e| map_error(key, "UploadPart", e))?;
                    let etag = out
                        .e_tag()
                        .ok_or_else(|| invalid_data(key, "UploadPart without ETag"))?;
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .e_tag(etag)
                        .build())
                })
                .await;
            match sent {
                Ok(part) => return Ok(part),
                Err(e) => retry.backoff(e).await?,
            }
        }
    }

    /// Best effort: a failed abort leaves parts that a lifecycle rule has to collect.
    async fn abort_multipart(&self, key: &str, full: &str, upload_id: &str) {
        let mut retry = self.retry(ObjectStoreOp::Put, key);
        loop {
            let aborted = retry
                .attempt(async {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.config.bucket)
                        .key(full)
                        .upload_id(upload_id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| match status(&e) {
                            Some(404) => not_found(key),
                            _ => map_error(key, "AbortMultipartUpload", e),
                        })
                })
                .await;
            match aborted {
                Ok(()) | Err(ObjectStoreError::NotFound { .. }) => return,
                Err(e) => {
                    if let Err(e) = retry.backoff(e).await {
                        tracing::warn!(key, upload_id, error = %e, "aborting a multipart upload failed; its parts stay until a lifecycle rule removes them");
                        return;
                    }
                }
            }
        }
    }

    /// One GET attempt; `range` is the HTTP range header, if any.
    async fn get_attempt(
        &self,
        op: ObjectStoreOp,
        key: &str,
        full: &str,
        range: Option<String>,
    ) -> Result<(Bytes, Option<String>), ObjectStoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(full)
            .set_range(range)
            .send()
            .await
            .map_err(|e| match (status(&e), code(&e)) {
                (Some(404), code) if code != Some("NoSuchBucket") => not_found(key),
                (Some(416), _) => ObjectStoreError::InvalidRange {
                    // Filled in by the caller, which knows the range and asks for the size.
                    key: key.to_owned(),
                    start: 0,
                    end: 0,
                    size: 0,
                },
                _ => map_error(key, "GetObject", e),
            })?;
        let content_range = out.content_range().map(str::to_owned);
        let expected = out.content_length();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| io_error(key, ErrorKind::UnexpectedEof, format!("reading body: {e}")))?
            .into_bytes();
        self.metrics.bytes_in(op, body.len() as u64);
        if let Some(expected) = expected
            && expected != body.len() as i64
        {
            return Err(invalid_data(
                key,
                &format!(
                    "body of {} bytes, Content-Length said {expected}",
                    body.len()
                ),
            ));
        }
        Ok((body, content_range))
    }

    /// `InvalidRange` with the object's real size, or `NotFound` if it is gone.
    /// A ranged GET. `capped`: the range may reach past the object's end and what the object
    /// holds of it is returned (S3 clamps the `Range` header itself), for
    /// [`ObjectStore::get_range_capped`].
    async fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        capped: bool,
    ) -> Result<Bytes, ObjectStoreError> {
        let full = self.full_key(key)?;
        // What is wanted of an object of `size` bytes.
        let wanted = |size: u64| {
            if capped {
                range.start..range.end.min(size)
            } else {
                range.clone()
            }
        };
        if range.start >= range.end {
            // HTTP cannot ask for zero bytes; the contract still wants existence and bounds.
            let size = self.head(key).await?.ok_or_else(|| not_found(key))?.size;
            check_range(key, &wanted(size), size)?;
            return Ok(Bytes::new());
        }
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let mut retry = self.retry(ObjectStoreOp::GetRange, key);
        loop {
            let got = retry
                .attempt(self.get_attempt(
                    ObjectStoreOp::GetRange,
                    key,
                    &full,
                    Some(header.clone()),
                ))
                .await;
            let (body, content_range) = match got {
                Ok(got) => got,
                Err(ObjectStoreError::InvalidRange { .. }) if capped => {
                    // S3 refuses a range starting at the end; capped, that is an empty read.
                    let size = self.head(key).await?.ok_or_else(|| not_found(key))?.size;
                    check_range(key, &wanted(size), size)?;
                    if range.start == size {
                        return Ok(Bytes::new());
                    }
                    return Err(self.invalid_range(key, &range).await);
                }
                Err(ObjectStoreError::InvalidRange { .. }) => {
                    return Err(self.invalid_range(key, &range).await);
                }
                Err(e) => {
                    retry.backoff(e).await?;
                    continue;
                }
            };
            let Some(content_range) = content_range else {
                // The server ignored the range and sent the whole object.
                let want = wanted(body.len() as u64);
                check_range(key, &want, body.len() as u64)?;
                return Ok(body.slice(want.start as usize..want.end as usize));
            };
            let (first, total) = parse_content_range(&content_range).ok_or_else(|| {
                invalid_data(key, &format!("unparsable Content-Range {content_range:?}"))
            })?;
            let want = wanted(total);
            check_range(key, &want, total)?;
            if first != want.start || body.len() as u64 != want.end - want.start {
                return Err(invalid_data(
                    key,
                    &format!(
                        "asked for {header}, got {} bytes as {content_range:?}",
                        body.len()
                    ),
                ));
            }
            return Ok(body);
        }
    }

    async fn invalid_range(&self, key: &str, range: &Range<u64>) -> ObjectStoreError {
        match self.head(key).await {
            Ok(Some(meta)) => match check_range(key, range, meta.size) {
                Err(e) => e,
                Ok(()) => invalid_data(
                    key,
                    &format!(
                        "server refused range {range:?} of an object of {} bytes",
                        meta.size
                    ),
                ),
            },
            Ok(None) => not_found(key),
            Err(e) => e,
        }
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<(), ObjectStoreError> {
        let label = keys.first().map(String::as_str).unwrap_or("");
        let mut remaining: Vec<String> = keys.to_vec();
        let mut retry = self.retry(ObjectStoreOp::DeleteMany, label);
        loop {
            let objects = remaining
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ObjectStoreError::Rejected {
                    key: label.to_owned(),
                    reason: format!("building DeleteObjects: {e}"),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| ObjectStoreError::Rejected {
                    key: label.to_owned(),
                    reason: format!("building DeleteObjects: {e}"),
                })?;
            let sent = retry
                .attempt(async {
                    self.client
                        .delete_objects()
                        .bucket(&self.config.bucket)
                        .delete(delete)
                        .send()
                        .await
                        .map_err(|e| map_error(label, "DeleteObjects", e))
                })
                .await;
            let out = match sent {
                Ok(out) => out,
                Err(e) => {
                    retry.backoff(e).await?;
                    continue;
                }
            };
            // Quiet mode lists only the keys that failed.
            let mut failed = Vec::new();
            let mut permanent = None;
            for err in out.errors() {
                let (Some(full), code) = (err.key(), err.code()) else {
                    continue;
                };
                if code == Some("NoSuchKey") {
                    continue;
                }
                let key = full.strip_prefix(self.prefix()).unwrap_or(full);
                let reason = format!(
                    "DeleteObjects: {} {}",
                    code.unwrap_or("no code"),
                    err.message().unwrap_or("")
                );
                if code.is_some_and(retryable_code) {
                    failed.push(full.to_owned());
                } else if permanent.is_none() {
                    permanent = Some(ObjectStoreError::Rejected {
                        key: key.to_owned(),
                        reason,
                    });
                }
            }
            if let Some(e) = permanent {
                self.metrics.error(ObjectStoreOp::DeleteMany);
                return Err(e);
            }
            if failed.is_empty() {
                return Ok(());
            }
            self.metrics.error(ObjectStoreOp::DeleteMany);
            let first = failed[0].clone();
            remaining = failed;
            retry
                .backoff(io_error(
                    first.strip_prefix(self.prefix()).unwrap_or(&first),
                    ErrorKind::Other,
                    format!(
                        "DeleteObjects failed for {} keys with a transient error",
                        remaining.len()
                    ),
                ))
                .await?;
        }
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectStoreError> {
        let full = self.full_key(key)?;
        if data.len() as u64 > self.config.multipart_threshold {
            self.multipart_put(key, &full, &data).await
        } else {
            self.single_put(key, &full, &data).await
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectStoreError> {
        let full = self.full_key(key)?;
        let mut retry = self.retry(ObjectStoreOp::Get, key);
        loop {
            match retry
                .attempt(self.get_attempt(ObjectStoreOp::Get, key, &full, None))
                .await
            {
                Ok((body, _)) => return Ok(body),
                Err(ObjectStoreError::InvalidRange { .. }) => {
                    return Err(invalid_data(key, "416 for a GET without a range"));
                }
                Err(e) => retry.backoff(e).await?,
            }
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectStoreError> {
        self.read_range(key, range, false).await
    }

    async fn get_range_capped(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, ObjectStoreError> {
        self.read_range(key, range, true).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectStoreError> {
        let full = self.full_key(key)?;
        let mut retry = self.retry(ObjectStoreOp::Head, key);
        loop {
            let got = retry
                .attempt(async {
                    match self
                        .client
                        .head_object()
                        .bucket(&self.config.bucket)
                        .key(&full)
                        .send()
                        .await
                    {
                        Ok(out) => {
                            let size = out
                                .content_length()
                                .and_then(|n| u64::try_from(n).ok())
                                .ok_or_else(|| {
                                    invalid_data(key, "HeadObject without a valid Content-Length")
                                })?;
                            Ok(Some(ObjectMeta {
                                key: key.to_owned(),
                                size,
                            }))
                        }
                        // A HEAD has no body, so a missing bucket looks like a missing key.
                        Err(e) if status(&e) == Some(404) => Ok(None),
                        Err(e) => Err(map_error(key, "HeadObject", e)),
                    }
                })
                .await;
            match got {
                Ok(meta) => return Ok(meta),
                Err(e) => retry.backoff(e).await?,
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix());
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut retry = self.retry(ObjectStoreOp::List, prefix);
            let page = loop {
                let got = retry
                    .attempt(async {
                        self.client
                            .list_objects_v2()
                            .bucket(&self.config.bucket)
                            .prefix(&full_prefix)
                            .max_keys(self.config.list_page_size as i32)
                            .set_continuation_token(token.clone())
                            .send()
                            .await
                            .map_err(|e| map_error(prefix, "ListObjectsV2", e))
                    })
                    .await;
                match got {
                    Ok(page) => break page,
                    Err(e) => retry.backoff(e).await?,
                }
            };
            for object in page.contents() {
                let full = object
                    .key()
                    .ok_or_else(|| invalid_data(prefix, "listed object without a key"))?;
                let key = full
                    .strip_prefix(self.prefix())
                    .filter(|k| k.starts_with(prefix))
                    .ok_or_else(|| {
                        invalid_data(
                            prefix,
                            &format!("listed key {full:?} is outside the prefix"),
                        )
                    })?;
                let size = object
                    .size()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| invalid_data(key, "listed object without a valid size"))?;
                objects.push(ObjectMeta {
                    key: key.to_owned(),
                    size,
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_owned()),
                (Some(true), None) => {
                    return Err(invalid_data(
                        prefix,
                        "truncated listing without a continuation token",
                    ));
                }
                _ => break,
            }
        }
        // S3 lists in UTF-8 byte order already; this guards S3-compatible servers.
        objects.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        let full = self.full_key(key)?;
        let mut retry = self.retry(ObjectStoreOp::Delete, key);
        loop {
            let done = retry
                .attempt(async {
                    match self
                        .client
                        .delete_object()
                        .bucket(&self.config.bucket)
                        .key(&full)
                        .send()
                        .await
                    {
                        Ok(_) => Ok(()),
                        // S3 answers 204 for a missing key; some compatible servers say 404.
                        Err(e) if status(&e) == Some(404) && code(&e) != Some("NoSuchBucket") => {
                            Ok(())
                        }
                        Err(e) => Err(map_error(key, "DeleteObject", e)),
                    }
                })
                .await;
            match done {
                Ok(()) => return Ok(()),
                Err(e) => retry.backoff(e).await?,
            }
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), ObjectStoreError> {
        let mut full: Vec<String> = keys
            .iter()
            .map(|k| self.full_key(k))
            .collect::<Result<_, _>>()?;
        full.sort_unstable();
        full.dedup();
        for chunk in full.chunks(self.config.delete_batch_size) {
            self.delete_batch(chunk).await?;
        }
        Ok(())
    }
}

/// The retry state of one request: attempts made, and the deadline of `operation_timeout`.
struct Retry<'a> {
    store: &'a S3ObjectStore,
    op: ObjectStoreOp,
    /// The key (or prefix) that errors name.
    key: &'a str,
    attempt: u32,
    /// Whether an earlier attempt failed with a retryable error (it may have taken effect).
    retried_after_failure: bool,
    deadline: Instant,
}

impl Retry<'_> {
    /// Runs one attempt under `request_timeout` (cut short by the deadline), counting it.
    async fn attempt<T>(
        &self,
        work: impl Future<Output = Result<T, ObjectStoreError>>,
    ) -> Result<T, ObjectStoreError> {
        let metrics = &self.store.metrics;
        metrics.request(self.op);
        let started = Instant::now();
        let limit = self
            .store
            .config
            .request_timeout
            .min(self.deadline.saturating_duration_since(Instant::now()));
        let result = match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(io_error(
                self.key,
                ErrorKind::TimedOut,
                format!(
                    "{} attempt {} timed out after {limit:?}",
                    self.op.name(),
                    self.attempt
                ),
            )),
        };
        metrics.observe(self.op, started.elapsed());
        if let Err(ObjectStoreError::Io { .. } | ObjectStoreError::Rejected { .. }) = &result {
            metrics.error(self.op);
        }
        result
    }

    /// After a failed attempt: sleeps and returns `Ok` if another attempt should be made,
    /// or returns the error.
    async fn backoff(&mut self, error: ObjectStoreError) -> Result<(), ObjectStoreError> {
        let config = &self.store.config;
        if !error.is_retryable() || self.attempt >= config.max_attempts {
            return Err(error);
        }
        let exp = config
            .initial_backoff
            .saturating_mul(1 << (self.attempt - 1).min(20))
            .min(config.max_backoff);
        // Equal jitter: half fixed, half random, so concurrent clients spread out.
        let delay = exp / 2 + exp.mul_f64(random_fraction() / 2.0);
        if Instant::now() + delay >= self.deadline {
            return Err(error);
        }
        tracing::debug!(op = self.op.name(), attempt = self.attempt, ?delay, error = %error, "retrying object store request");
        tokio::time::sleep(delay).await;
        self.attempt += 1;
        self.retried_after_failure = true;
        Ok(())
    }
}

/// Aborts a multipart upload whose `put` future was dropped before it finished or aborted.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    /// `None` once the upload was completed or aborted.
    upload_id: Option<String>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let bucket = std::mem::take(&mut self.bucket);
        let key = std::mem::take(&mut self.key);
        runtime.spawn(async move {
            if let Err(e) = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(key, upload_id, error = %DisplayErrorContext(&e), "aborting a cancelled multipart upload failed");
            }
        });
    }
}

/// The HTTP client: hyper with rustls on ring.
fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Whether a CompleteMultipartUpload "error" is in fact a success that the SDK could not parse:
/// moto 5.2 (the test server) names the root element of its answer
/// `CompleteMultipartUploadResponse` where S3 says `CompleteMultipartUploadResult`, and the SDK
/// checks the name. Only a 200 whose body is exactly such an answer qualifies; S3's real
/// "200 with an `<Error>` body" failures do not.
fn is_misnamed_complete_success<E>(err: &SdkError<E>) -> bool {
    let Some(raw) = err.raw_response() else {
        return false;
    };
    let Some(body) = raw.body().bytes() else {
        return false;
    };
    let body = String::from_utf8_lossy(body);
    raw.status().as_u16() == 200
        && body.contains("<CompleteMultipartUploadResponse")
        && body.contains("<ETag>")
        && !body.contains("<Error>")
}

fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn code<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// Error codes that mean "try again later", whatever their status.
fn retryable_code(code: &str) -> bool {
    matches!(
        code,
        "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "InternalError"
            | "ServiceUnavailable"
            | "PriorRequestNotComplete"
            | "OperationAborted"
            | "ConditionalRequestConflict"
            | "ExpiredToken"
            | "RequestTimeTooSkewed"
    )
}

/// Maps an SDK failure that is not an answer of the contract to `Io` (retryable) or
/// `Rejected` (a deployment problem).
fn map_error<E>(key: &str, what: &str, err: SdkError<E>) -> ObjectStoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = format!("{what}: {}", DisplayErrorContext(&err));
    let kind = match &err {
        SdkError::TimeoutError(_) => Some(ErrorKind::TimedOut),
        // No complete response (refused, reset, credentials not loadable yet, ...).
        SdkError::DispatchFailure(d) if d.is_timeout() => Some(ErrorKind::TimedOut),
        SdkError::DispatchFailure(_) => Some(ErrorKind::ConnectionAborted),
        SdkError::ResponseError(_) => Some(ErrorKind::InvalidData),
        SdkError::ServiceError(_) => {
            let status = status(&err).unwrap_or(0);
            let retryable = match status {
                501 => false,
                500..=599 | 408 | 409 | 429 => true,
                _ => code(&err).is_some_and(retryable_code),
            };
            retryable.then_some(ErrorKind::Other)
        }
        // Construction failures (bad input, bad configuration) and future variants.
        _ => None,
    };
    match kind {
        Some(kind) => io_error(key, kind, detail),
        None => ObjectStoreError::Rejected {
            key: key.to_owned(),
            reason: detail,
        },
    }
}

fn io_error(key: &str, kind: ErrorKind, message: String) -> ObjectStoreError {
    ObjectStoreError::Io {
        key: key.to_owned(),
        source: io::Error::new(kind, message),
    }
}

/// A response that does not make sense; retryable, since a proxy or a torn connection can
/// cause it.
fn invalid_data(key: &str, message: &str) -> ObjectStoreError {
    io_error(key, ErrorKind::InvalidData, message.to_owned())
}

fn not_found(key: &str) -> ObjectStoreError {
    ObjectStoreError::NotFound {
        key: key.to_owned(),
    }
}

fn already_exists(key: &str) -> ObjectStoreError {
    ObjectStoreError::AlreadyExists {
        key: key.to_owned(),
    }
}

/// `bytes FIRST-LAST/TOTAL` → (first, total).
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, _last) = span.split_once('-')?;
    Some((first.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// A number in [0, 1) that differs between calls (for jitter; not cryptographic).
fn random_fraction() -> f64 {
    // Every RandomState has fresh keys, so hashing the same input gives a new value.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u8(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(parse_content_range("bytes 0-99/100"), Some((0, 100)));
        assert_eq!(parse_content_range("bytes 50-99/100"), Some((50, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("bytes 0-1/*"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn config_is_validated() {
        let ok = S3Config::new("bucket", "us-east-1");
        assert_eq!(ok.validate(), Ok(()));
        let cases: [fn(&mut S3Config); 6] = [
            |c| c.bucket.clear(),
            |c| c.max_attempts = 0,
            |c| c.multipart_part_size = MIN_PART_SIZE - 1,
            |c| c.list_page_size = 1001,
            |c| c.delete_batch_size = 0,
            |c| c.request_timeout = Duration::ZERO,
        ];
        for (i, break_it) in cases.iter().enumerate() {
            let mut c = ok.clone();
            break_it(&mut c);
            assert!(c.validate().is_err(), "case {i} must be rejected");
        }
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = S3Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-secret".into()),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("AKID"));
        assert!(!shown.contains("secret-") && !shown.contains("very-secret"));
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..100 {
            let f = random_fraction();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
