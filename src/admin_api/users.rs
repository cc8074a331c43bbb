//! `/v1/users...`: the SCRAM users SASL clients log in as. Set a user's credential for a
//! mechanism from a password, delete it, list users with their mechanisms.
//!
//! Why here as well as AlterUserScramCredentials: with SASL on, a Kafka client must already be
//! a user to reach the Kafka APIs, so the first users are made through this token-protected
//! API (`kafscale admin users set`). The password arrives in the request body, is salted
//! (random salt, PBKDF2 with the requested iteration count) into the same credential the
//! Kafka API stores, and is dropped: it is never stored or logged. Use HTTPS
//! (`--http-tls-cert`) or a local connection, as for the token itself.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kafscale_sasl::{MAX_ITERATIONS, MIN_ITERATIONS, ScramCredential, ScramMechanism, random_salt};
use kafscale_shared::catalog::CatalogError;
use kafscale_shared::meta_store::MetaStoreError;
use kafscale_shared::scram_credentials::{CredentialStore, MAX_USER_BYTES};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::AdminState;
use super::error::{ApiError, ApiJson, ErrorBody};

/// Longest password accepted (PLAIN messages are at most 767 bytes anyway).
const MAX_PASSWORD_BYTES: usize = 512;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CredentialInfo {
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub(crate) mechanism: String,
    pub(crate) iterations: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct UserInfo {
    pub(crate) name: String,
    pub(crate) credentials: Vec<CredentialInfo>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct UserList {
    pub(crate) users: Vec<UserInfo>,
}

/// The password to derive a credential from (never stored, never logged).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"password": "alice-secret", "iterations": 8192}))]
pub(crate) struct SetCredential {
    #[schema(min_length = 1, max_length = 512)]
    pub(crate) password: String,
    /// PBKDF2 iterations, 4096..=16384 (default 4096, Kafka's).
    #[schema(minimum = 4096, maximum = 16384)]
    pub(crate) iterations: Option<u32>,
}

impl std::fmt::Debug for SetCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn credentials(s: &AdminState) -> CredentialStore {
    CredentialStore::new(s.catalog().store().clone())
}

fn store_error(e: MetaStoreError) -> ApiError {
    ApiError::Store(CatalogError::Store(e))
}

fn mechanism_of(name: &str) -> Result<ScramMechanism, ApiError> {
    ScramMechanism::from_name(name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown mechanism {name:?} (SCRAM-SHA-256 or SCRAM-SHA-512)"
        ))
    })
}

fn check_user(user: &str) -> Result<(), ApiError> {
    if user.is_empty() || user.len() > MAX_USER_BYTES {
        return Err(ApiError::BadRequest(format!(
            "a user name has 1 to {MAX_USER_BYTES} bytes"
        )));
    }
    Ok(())
}

#[utoipa::path(
    get, path = "/v1/users", tag = "users",
    summary = "Every SCRAM user with its mechanisms and iteration counts (never keys or salts)",
    responses(
        (status = 200, body = UserList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub(crate) async fn list(State(s): State<AdminState>) -> Result<Json<UserList>, ApiError> {
    let users = credentials(&s).list().await.map_err(store_error)?;
    Ok(Json(UserList {
        users: users
            .into_iter()
            .map(|(name, credentials)| UserInfo {
                name,
                credentials: credentials
                    .iter()
                    .map(|c| CredentialInfo {
                        mechanism: c.mechanism.name().to_string(),
                        iterations: c.iterations,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

#[utoipa::path(
    put, path = "/v1/users/{user}/credentials/{mechanism}", tag = "users",
    summary = "Create or replace a user's SCRAM credential from a password",
    params(
        ("user" = String, Path, description = "User name", example = "alice"),
        ("mechanism" = String, Path, description = "SCRAM-SHA-256 or SCRAM-SHA-512", example = "SCRAM-SHA-512"),
    ),
    request_body = SetCredential,
    responses(
        (status = 200, body = CredentialInfo),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn set(
    State(s): State<AdminState>,
    Path((user, mechanism)): Path<(String, String)>,
    ApiJson(body): ApiJson<SetCredential>,
) -> Result<Json<CredentialInfo>, ApiError> {
    check_user(&user)?;
    let mechanism = mechanism_of(&mechanism)?;
    if body.password.is_empty() || body.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::BadRequest(format!(
            "a password has 1 to {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let iterations = body.iterations.unwrap_or(MIN_ITERATIONS);
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(ApiError::BadRequest(format!(
            "iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}"
        )));
    }
    let salt = random_salt().map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let credential = ScramCredential::from_password(mechanism, &body.password, salt, iterations)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    drop(body);
    credentials(&s)
        .put(&user, &credential)
        .await
        .map_err(store_error)?;
    info!(
        user,
        mechanism = mechanism.name(),
        iterations,
        "scram credential set through the admin API"
    );
    Ok(Json(CredentialInfo {
        mechanism: mechanism.name().to_string(),
        iterations,
    }))
}

#[utoipa::path(
    delete, path = "/v1/users/{user}/credentials/{mechanism}", tag = "users",
    summary = "Delete a user's SCRAM credential (the user is gone with its last one)",
    params(
        ("user" = String, Path, description = "User name", example = "alice"),
        ("mechanism" = String, Path, description = "SCRAM-SHA-256 or SCRAM-SHA-512", example = "SCRAM-SHA-512"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(s): State<AdminState>,
    Path((user, mechanism)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mechanism = mechanism_of(&mechanism)?;
    if !credentials(&s)
        .delete(&user, mechanism)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::CredentialNotFound {
            user,
            mechanism: mechanism.name(),
        });
    }
    info!(
        user,
        mechanism = mechanism.name(),
        "scram credential deleted through the admin API"
    );
    Ok(StatusCode::NO_CONTENT)
}
