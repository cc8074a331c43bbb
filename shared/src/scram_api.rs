//! DescribeUserScramCredentials (key 50) and AlterUserScramCredentials (key 51), v0: the
//! Kafka APIs that manage SASL/SCRAM users, served by every gateway from the
//! [`CredentialStore`] (as `kafka-configs --alter --add-config 'SCRAM-SHA-256=[...]'` and
//! AdminClient's `alterUserScramCredentials` use them).
//!
//! Kafka's rules, per user: an empty name or a bad credential (iterations outside
//! 4096..=16384, empty salt or salted password) is UNACCEPTABLE_CREDENTIAL, an unknown
//! mechanism UNSUPPORTED_SASL_MECHANISM, the same user and mechanism twice in one request
//! DUPLICATE_RESOURCE, the deletion of a missing credential RESOURCE_NOT_FOUND. A user with
//! any error gets nothing written; the changes of each other user are written atomically.
//! The client sends a SaltedPassword, never the password, and the server keeps only the
//! derived keys.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_sasl::{SaslError, ScramCredential, ScramMechanism};
use tracing::{info, warn};

use crate::meta_store::MetaStoreError;
use crate::scram_credentials::{ApplyError, CredentialChange, CredentialStore, MAX_USER_BYTES};

/// A per-user error: code and message.
type UserError = (ResponseError, String);

fn user_error(code: ResponseError, message: &str) -> Option<UserError> {
    Some((code, message.to_string()))
}

fn store_error(e: &MetaStoreError) -> UserError {
    (ResponseError::KafkaStorageError, e.to_string())
}

/// Serves the SCRAM credential APIs.
#[derive(Debug, Clone)]
pub struct ScramApi {
    store: CredentialStore,
}

impl ScramApi {
    pub fn new(store: CredentialStore) -> Self {
        ScramApi { store }
    }

    /// DescribeUserScramCredentials: the mechanisms and iteration counts of the named users,
    /// or of every user when none is named.
    pub async fn describe(
        &self,
        request: DescribeUserScramCredentialsRequest,
    ) -> DescribeUserScramCredentialsResponse {
        let mut response = DescribeUserScramCredentialsResponse::default();
        let names: Vec<String> = request
            .users
            .unwrap_or_default()
            .into_iter()
            .map(|u| u.name.to_string())
            .collect();
        if names.is_empty() {
            match self.store.list().await {
                Ok(users) => {
                    response.results = users
                        .into_iter()
                        .map(|(user, credentials)| described(&user, &credentials, None))
                        .collect();
                }
                Err(e) => {
                    warn!(error = %e, "listing scram credentials failed");
                    response.error_code = ResponseError::KafkaStorageError.code();
                    response.error_message = Some(StrBytes::from_string(e.to_string()));
                }
            }
            return response;
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for name in &names {
            *counts.entry(name).or_default() += 1;
        }
        let mut answered = Vec::new();
        for name in &names {
            if answered.contains(&name) {
                continue;
            }
            answered.push(name);
            response
                .results
                .push(self.describe_user(name, counts[name.as_str()]).await);
        }
        response
    }

    async fn describe_user(
        &self,
        user: &str,
        times_named: usize,
    ) -> DescribeUserScramCredentialsResult {
        if times_named > 1 {
            let error = user_error(
                ResponseError::DuplicateResource,
                "Cannot describe SCRAM credentials for the same user twice in a single request",
            );
            return described(user, &[], error);
        }
        match self.store.list_user(user).await {
            Ok(credentials) if credentials.is_empty() => described(
                user,
                &[],
                user_error(
                    ResponseError::ResourceNotFound,
                    "Attempt to describe a user credential that does not exist",
                ),
            ),
            Ok(credentials) => described(user, &credentials, None),
            Err(e) => {
                warn!(user, error = %e, "reading scram credentials failed");
                described(user, &[], Some(store_error(&e)))
            }
        }
    }

    /// AlterUserScramCredentials: deletions and upsertions, validated and applied per user.
    pub async fn alter(
        &self,
        request: AlterUserScramCredentialsRequest,
    ) -> AlterUserScramCredentialsResponse {
        let mut alterations = Alterations::default();
        for deletion in request.deletions {
            let user = deletion.name.to_string();
            alterations.add(&user, deletion.mechanism, |mechanism| {
                Ok(CredentialChange::Delete(mechanism))
            });
        }
        for upsertion in request.upsertions {
            let user = upsertion.name.to_string();
            alterations.add(&user, upsertion.mechanism, |mechanism| {
                ScramCredential::from_salted_password(
                    mechanism,
                    upsertion.salt.to_vec(),
                    i64::from(upsertion.iterations),
                    &upsertion.salted_password,
                )
                .map(CredentialChange::Upsert)
                .map_err(|e| credential_error(&e))
            });
        }
        let mut response = AlterUserScramCredentialsResponse::default();
        for alteration in alterations.users {
            let error = match alteration.error {
                Some(error) => Some(error),
                None => self.apply(&alteration.user, &alteration.changes).await,
            };
            let mut result = AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(alteration.user));
            if let Some((code, message)) = error {
                result.error_code = code.code();
                result.error_message = Some(StrBytes::from_string(message));
            }
            response.results.push(result);
        }
        response
    }

    async fn apply(&self, user: &str, changes: &[CredentialChange]) -> Option<UserError> {
        match self.store.apply(user, changes).await {
            Ok(()) => {
                for change in changes {
                    match change {
                        CredentialChange::Upsert(c) => {
                            info!(user, mechanism = %c.mechanism, iterations = c.iterations, "scram credential set")
                        }
                        CredentialChange::Delete(m) => {
                            info!(user, mechanism = %m, "scram credential deleted")
                        }
                    }
                }
                None
            }
            Err(ApplyError::NotFound { .. }) => user_error(
                ResponseError::ResourceNotFound,
                "Attempt to delete a user credential that does not exist",
            ),
            Err(ApplyError::Store(e)) => {
                warn!(user, error = %e, "writing scram credentials failed");
                Some(store_error(&e))
            }
        }
    }
}

fn described(
    user: &str,
    credentials: &[ScramCredential],
    error: Option<UserError>,
) -> DescribeUserScramCredentialsResult {
    let mut result = DescribeUserScramCredentialsResult::default()
        .with_user(StrBytes::from_string(user.to_string()))
        .with_credential_infos(
            credentials
                .iter()
                .map(|c| {
                    CredentialInfo::default()
                        .with_mechanism(c.mechanism.kafka_type())
                        .with_iterations(c.iterations as i32)
                })
                .collect(),
        );
    if let Some((code, message)) = error {
        result.error_code = code.code();
        result.error_message = Some(StrBytes::from_string(message));
    }
    result
}

/// Maps a refused credential onto Kafka's code and message.
fn credential_error(e: &SaslError) -> UserError {
    let message = match e {
        SaslError::InvalidIterations(i) if *i < i64::from(kafscale_sasl::MIN_ITERATIONS) => {
            "Too few iterations".to_string()
        }
        SaslError::InvalidIterations(_) => "Too many iterations".to_string(),
        other => other.to_string(),
    };
    (ResponseError::UnacceptableCredential, message)
}

/// The validated changes of one request, per user in order of first mention.
#[derive(Default)]
struct Alterations {
    users: Vec<UserAlteration>,
}

struct UserAlteration {
    user: String,
    changes: Vec<CredentialChange>,
    mechanisms: Vec<i8>,
    /// The first problem found; nothing of the user is written then.
    error: Option<UserError>,
}

impl Alterations {
    /// Adds one deletion or upsertion of `user` for the mechanism numbered `mechanism`;
    /// `change` builds it once the mechanism is known.
    fn add(
        &mut self,
        user: &str,
        mechanism: i8,
        change: impl FnOnce(ScramMechanism) -> Result<CredentialChange, UserError>,
    ) {
        let index = match self.users.iter().position(|a| a.user == user) {
            Some(i) => i,
            None => {
                self.users.push(UserAlteration {
                    user: user.to_string(),
                    changes: Vec::new(),
                    mechanisms: Vec::new(),
                    error: None,
                });
                self.users.len() - 1
            }
        };
        let alteration = &mut self.users[index];
        let twice = alteration.mechanisms.contains(&mechanism);
        alteration.mechanisms.push(mechanism);
        if twice {
            // Outranks any earlier error, as the user's other problems may be its repeat.
            alteration.error = user_error(
                ResponseError::DuplicateResource,
                "A user credential cannot be altered twice in the same request",
            );
        }
        if alteration.error.is_some() {
            return;
        }
        alteration.error = if user.is_empty() {
            user_error(
                ResponseError::UnacceptableCredential,
                "Username must not be empty",
            )
        } else if user.len() > MAX_USER_BYTES {
            user_error(
                ResponseError::UnacceptableCredential,
                "Username is too long",
            )
        } else {
            match ScramMechanism::from_kafka_type(mechanism) {
                None => user_error(
                    ResponseError::UnsupportedSaslMechanism,
                    "Unknown SCRAM mechanism",
                ),
                Some(m) => match change(m) {
                    Ok(change) => {
                        alteration.changes.push(change);
                        None
                    }
                    Err(error) => Some(error),
                },
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;

    use super::*;
    use crate::meta_store::MemoryMetaStore;

    fn api() -> ScramApi {
        ScramApi::new(CredentialStore::new(Arc::new(MemoryMetaStore::new())))
    }

    fn s(text: &str) -> StrBytes {
        StrBytes::from_string(text.to_string())
    }

    fn upsertion(user: &str, mechanism: i8, iterations: i32) -> ScramCredentialUpsertion {
        ScramCredentialUpsertion::default()
            .with_name(s(user))
            .with_mechanism(mechanism)
            .with_iterations(iterations)
            .with_salt(Bytes::from_static(b"salt"))
            .with_salted_password(Bytes::from(vec![7u8; 32]))
    }

    fn deletion(user: &str, mechanism: i8) -> ScramCredentialDeletion {
        ScramCredentialDeletion::default()
            .with_name(s(user))
            .with_mechanism(mechanism)
    }

    async fn alter(
        api: &ScramApi,
        deletions: Vec<ScramCredentialDeletion>,
        upsertions: Vec<ScramCredentialUpsertion>,
    ) -> Vec<(String, i16)> {
        let request = AlterUserScramCredentialsRequest::default()
            .with_deletions(deletions)
            .with_upsertions(upsertions);
        api.alter(request)
            .await
            .results
            .into_iter()
            .map(|r| (r.user.to_string(), r.error_code))
            .collect()
    }

    /// (user, error code, [(mechanism, iterations)]) per result.
    async fn describe(
        api: &ScramApi,
        users: Option<&[&str]>,
    ) -> Vec<(String, i16, Vec<(i8, i32)>)> {
        let request = DescribeUserScramCredentialsRequest::default().with_users(users.map(|u| {
            u.iter()
                .map(|n| UserName::default().with_name(s(n)))
                .collect()
        }));
        let response = api.describe(request).await;
        assert_eq!(response.error_code, 0);
        response
            .results
            .into_iter()
            .map(|r| {
                let infos = r
                    .credential_infos
                    .iter()
                    .map(|c| (c.mechanism, c.iterations))
                    .collect();
                (r.user.to_string(), r.error_code, infos)
            })
            .collect()
    }

    fn code(e: ResponseError) -> i16 {
        e.code()
    }

    #[tokio::test]
    async fn upserted_credentials_are_described() {
        let api = api();
        let results = alter(
            &api,
            vec![],
            vec![
                upsertion("alice", 1, 4096),
                upsertion("alice", 2, 8192),
                upsertion("bob", 2, 16384),
            ],
        )
        .await;
        assert_eq!(results, [("alice".into(), 0), ("bob".into(), 0)]);
        let all = vec![
            ("alice".to_string(), 0, vec![(1, 4096), (2, 8192)]),
            ("bob".to_string(), 0, vec![(2, 16384)]),
        ];
        assert_eq!(describe(&api, None).await, all);
        assert_eq!(describe(&api, Some(&[][..])).await, all);
        assert_eq!(
            describe(&api, Some(&["bob", "carol", "alice", "alice"][..])).await,
            [
                ("bob".into(), 0, vec![(2, 16384)]),
                (
                    "carol".into(),
                    code(ResponseError::ResourceNotFound),
                    vec![]
                ),
                (
                    "alice".into(),
                    code(ResponseError::DuplicateResource),
                    vec![]
                ),
            ]
        );

        let results = alter(&api, vec![deletion("alice", 1), deletion("bob", 2)], vec![]).await;
        assert_eq!(results, [("alice".into(), 0), ("bob".into(), 0)]);
        assert_eq!(
            describe(&api, None).await,
            [("alice".to_string(), 0, vec![(2, 8192)])]
        );
    }

    #[tokio::test]
    async fn refused_alterations_write_nothing_for_their_user() {
        let api = api();
        let results = alter(
            &api,
            vec![deletion("gone", 1), deletion("twice", 1)],
            vec![
                upsertion("ok", 1, 4096),
                upsertion("few", 1, 4095),
                upsertion("many", 2, 16385),
                upsertion("", 1, 4096),
                upsertion("mech", 0, 4096),
                upsertion("mech3", 3, 4096),
                upsertion("twice", 1, 4096),
                upsertion("gone", 2, 4096),
                upsertion("nosalt", 1, 4096).with_salt(Bytes::new()),
                upsertion("nopassword", 1, 4096).with_salted_password(Bytes::new()),
            ],
        )
        .await;
        let unacceptable = code(ResponseError::UnacceptableCredential);
        assert_eq!(
            results,
            [
                ("gone".into(), code(ResponseError::ResourceNotFound)),
                ("twice".into(), code(ResponseError::DuplicateResource)),
                ("ok".into(), 0),
                ("few".into(), unacceptable),
                ("many".into(), unacceptable),
                ("".into(), unacceptable),
                ("mech".into(), code(ResponseError::UnsupportedSaslMechanism)),
                (
                    "mech3".into(),
                    code(ResponseError::UnsupportedSaslMechanism)
                ),
                ("nosalt".into(), unacceptable),
                ("nopassword".into(), unacceptable),
            ]
        );
        assert_eq!(
            describe(&api, None).await,
            [("ok".to_string(), 0, vec![(1, 4096)])]
        );
    }

    #[tokio::test]
    async fn an_altered_credential_authenticates() {
        use kafscale_sasl::{Authenticator, Mechanism, SaslConfig};
        let store = CredentialStore::new(Arc::new(MemoryMetaStore::new()));
        let api = ScramApi::new(store.clone());
        let credential =
            ScramCredential::from_password(ScramMechanism::Sha256, "pw", b"salt".to_vec(), 4096)
                .unwrap();
        store.put("alice", &credential).await.unwrap();
        let auth = Authenticator::new(
            SaslConfig::new(vec![Mechanism::Plain]).unwrap(),
            Arc::new(store),
        );
        let step = auth
            .start("PLAIN")
            .unwrap()
            .step(b"\0alice\0pw")
            .await
            .unwrap();
        assert_eq!(step.done.unwrap().to_string(), "User:alice");
        alter(&api, vec![deletion("alice", 1)], vec![]).await;
        assert!(
            auth.start("PLAIN")
                .unwrap()
                .step(b"\0alice\0pw")
                .await
                .is_err()
        );
    }
}
