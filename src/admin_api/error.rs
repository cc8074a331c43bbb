//! The admin API's errors: one enum, one JSON shape (`{"code": ..., "message": ...}`) and one
//! HTTP status per variant. Codes are stable (scripts match on them); messages are for people.
//! Every response with an error status leaves the API in this shape, including the ones axum
//! and the tower layers produce themselves (unknown path, timeout, oversized body): see
//! [`json_errors`].

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kafscale_fetch::FetchError;
use kafscale_shared::catalog::CatalogError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// Stable machine-readable code, e.g. `unknown_topic`, `group_not_empty`, `unauthorized`.
    pub(crate) code: String,
    /// What went wrong, for a person.
    pub(crate) message: String,
    /// For `not_coordinator`: "host:port" of the Kafka listener of the process that
    /// coordinates the group, when one is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) coordinator: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing bearer token (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("wrong bearer token")]
    Forbidden,
    #[error("this token is read-only: mutations need the admin token")]
    ReadOnlyToken,
    #[error(
        "mutations are disabled: no admin token is configured (--admin-token-file or KAFSCALE_ADMIN_TOKEN)"
    )]
    MutationsDisabled,
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("group {0} not found")]
    GroupNotFound(String),
    #[error("user {user:?} has no {mechanism} credential")]
    CredentialNotFound {
        user: String,
        mechanism: &'static str,
    },
    #[error(
        "assignments can only be reset if the group {group} is inactive, but its state is {state}"
    )]
    GroupNotEmpty { group: String, state: String },
    #[error("this process does not coordinate group {group}; ask {}", coordinator.as_deref().unwrap_or("the coordinator (none is live yet)"))]
    NotCoordinator {
        group: String,
        coordinator: Option<String>,
    },
    #[error("the Kafka tiers of this process are not running yet")]
    NoGroups,
    #[error("no such admin endpoint (see /openapi.json)")]
    NoSuchEndpoint,
    #[error("metadata store: {0}")]
    Store(#[source] CatalogError),
    #[error("{0}")]
    Fetch(#[source] FetchError),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::ReadOnlyToken | ApiError::MutationsDisabled => {
                StatusCode::FORBIDDEN
            }
            ApiError::UnknownTopic(_)
            | ApiError::UnknownPartition { .. }
            | ApiError::GroupNotFound(_)
            | ApiError::CredentialNotFound { .. }
            | ApiError::NoSuchEndpoint => StatusCode::NOT_FOUND,
            ApiError::TopicExists(_)
            | ApiError::GroupNotEmpty { .. }
            | ApiError::NotCoordinator { .. } => StatusCode::CONFLICT,
            ApiError::NoGroups => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(e) if !e.is_retryable() => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Store(_) | ApiError::Fetch(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::ReadOnlyToken => "read_only_token",
            ApiError::MutationsDisabled => "mutations_disabled",
            ApiError::UnknownTopic(_) => "unknown_topic",
            ApiError::UnknownPartition { .. } => "unknown_partition",
            ApiError::TopicExists(_) => "topic_exists",
            ApiError::GroupNotFound(_) => "group_not_found",
            ApiError::CredentialNotFound { .. } => "credential_not_found",
            ApiError::GroupNotEmpty { .. } => "group_not_empty",
            ApiError::NotCoordinator { .. } => "not_coordinator",
            ApiError::NoGroups => "unavailable",
            ApiError::NoSuchEndpoint => "not_found",
            ApiError::Store(_) => "store_unavailable",
            ApiError::Fetch(_) => "unavailable",
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::TopicExists(t) => ApiError::TopicExists(t),
            CatalogError::UnknownTopic(t) => ApiError::UnknownTopic(t),
            CatalogError::InvalidTopicName { .. } | CatalogError::InvalidPartitions(_) => {
                ApiError::BadRequest(e.to_string())
            }
            CatalogError::Contention(_) | CatalogError::Store(_) => ApiError::Store(e),
        }
    }
}

impl ApiError {
    /// The error of a group operation on `group`.
    pub(crate) fn from_group(group: &str, e: FetchError) -> Self {
        match e {
            FetchError::InvalidGroupId => {
                ApiError::BadRequest(format!("invalid group id {group:?}"))
            }
            FetchError::GroupNotFound(g) => ApiError::GroupNotFound(g),
            FetchError::GroupNotEmpty { group, state } => ApiError::GroupNotEmpty { group, state },
            FetchError::NotCoordinator { coordinator } => ApiError::NotCoordinator {
                group: group.to_string(),
                coordinator,
            },
            FetchError::UnknownTopicOrPartition
            | FetchError::UnknownTopicId
            | FetchError::OffsetOutOfRange { .. }
            | FetchError::Metadata(_)
            | FetchError::Storage(_)
            | FetchError::IndexMoved(_)
            | FetchError::Corrupt(_) => ApiError::Fetch(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "admin request failed");
        }
        let coordinator = match &self {
            ApiError::NotCoordinator { coordinator, .. } => coordinator.clone(),
            _ => None,
        };
        let body = ErrorBody {
            code: self.code().to_string(),
            message: self.to_string(),
            coordinator,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kafscale-admin\""),
            );
        }
        response
    }
}

/// A JSON request body whose rejections (bad JSON, wrong shape, missing content type, too
/// large) are [`ApiError::BadRequest`]s in the API's error shape.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                let status = rejection.status();
                let body = ErrorBody {
                    code: code_for_status(status).to_string(),
                    message: rejection.body_text(),
                    coordinator: None,
                };
                // Kafka-style clarity: a body that is not what the operation takes is a 400
                // (or 413 when too large), never a 5xx.
                let status = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    status
                } else {
                    StatusCode::BAD_REQUEST
                };
                Err((status, axum::Json(body)).into_response())
            }
        }
    }
}

fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Rewrites every error response that is not already JSON (axum's path and query
/// rejections, unknown routes, the timeout layer's 408, ...) into the API's error shape, and
/// 4xx rejections of path and query parameters (which axum may answer 422 or 400) into 400.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let status = if parts.status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        parts.status
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let body = ErrorBody {
        code: code_for_status(status).to_string(),
        message,
        coordinator: None,
    };
    let mut out = (status, axum::Json(body)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
