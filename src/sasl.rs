//! SASL flags of the Kafka listener (docs/security.md): which mechanisms clients must
//! authenticate with, KIP-368 session lifetime, the delay of a failed authentication, how long
//! a connection may take to authenticate.
//!
//! No mechanism (the default) means no SASL: the listener behaves as it always did. PLAIN
//! sends the password itself, so it is refused at startup on a listener without TLS unless
//! `--sasl-allow-plain-without-tls` says that is intended (a test rig, a trusted network).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kafscale_sasl::Mechanism;
use kafscale_shared::meta_store::MetaStore;
use kafscale_shared::scram_credentials::cluster_authenticator;
use kafscale_shared::wire::SaslSettings;

/// SASL authentication on the Kafka listener.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KafkaSaslArgs {
    /// SASL mechanisms every Kafka client must authenticate with, comma-separated, in the
    /// order offered: SCRAM-SHA-512, SCRAM-SHA-256, PLAIN. Empty (the default): no SASL.
    /// Users are SCRAM credentials (`kafscale admin users set`, AlterUserScramCredentials).
    #[arg(long, env = "KAFSCALE_SASL_MECHANISMS", value_delimiter = ',')]
    pub(crate) sasl_mechanisms: Vec<String>,
    /// Allow PLAIN on a listener without TLS (the password then crosses the network in
    /// clear); without it, that combination stops the process at startup.
    #[arg(
        long,
        env = "KAFSCALE_SASL_ALLOW_PLAIN_WITHOUT_TLS",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub(crate) sasl_allow_plain_without_tls: bool,
    /// How long an authentication is valid (milliseconds; KIP-368, Kafka's
    /// `connections.max.reauth.ms`): clients re-authenticate on the same connection before it
    /// ends, and a connection that did not is closed at its next request. 0: no limit.
    #[arg(long, env = "KAFSCALE_SASL_SESSION_LIFETIME_MS", default_value_t = 0)]
    pub(crate) sasl_session_lifetime_ms: u64,
    /// How long a failed authentication waits before it is answered and the connection closed
    /// (milliseconds; Kafka's `connection.failed.authentication.delay.ms`).
    #[arg(long, env = "KAFSCALE_SASL_FAILURE_DELAY_MS", default_value_t = 100)]
    pub(crate) sasl_failure_delay_ms: u64,
    /// How long a new connection may take to authenticate (milliseconds): one that has not
    /// completed SASL by then is closed, so stalled handshakes cannot hold connection slots.
    #[arg(
        long,
        env = "KAFSCALE_SASL_AUTHENTICATION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub(crate) sasl_authentication_timeout_ms: u64,
}

/// Shortest session lifetime accepted: clients re-authenticate at about 90 % of it.
const MIN_SESSION_LIFETIME_MS: u64 = 1_000;

impl KafkaSaslArgs {
    /// The enabled mechanisms (names case-insensitive; empty entries ignored, repeats once).
    pub(crate) fn mechanisms(&self) -> anyhow::Result<Vec<Mechanism>> {
        let mut mechanisms = Vec::new();
        for name in self.sasl_mechanisms.iter().map(|n| n.trim()) {
            if name.is_empty() {
                continue;
            }
            let mechanism = Mechanism::ALL
                .into_iter()
                .find(|m| m.name().eq_ignore_ascii_case(name))
                .with_context(|| {
                    format!(
                        "--sasl-mechanisms: unknown mechanism {name:?} (known: SCRAM-SHA-512, SCRAM-SHA-256, PLAIN)"
                    )
                })?;
            if !mechanisms.contains(&mechanism) {
                mechanisms.push(mechanism);
            }
        }
        Ok(mechanisms)
    }

    /// Checks the flags; `tls`: whether the Kafka listener speaks TLS.
    pub(crate) fn validate(&self, tls: bool) -> anyhow::Result<Vec<Mechanism>> {
        let mechanisms = self.mechanisms()?;
        if mechanisms.contains(&Mechanism::Plain) && !tls && !self.sasl_allow_plain_without_tls {
            anyhow::bail!(
                "--sasl-mechanisms includes PLAIN, which sends passwords in clear, but the Kafka \
                 listener has no TLS: add --kafka-tls-cert and --kafka-tls-key, drop PLAIN, or \
                 set --sasl-allow-plain-without-tls if that is intended"
            );
        }
        let lifetime = self.sasl_session_lifetime_ms;
        if lifetime != 0 && lifetime < MIN_SESSION_LIFETIME_MS {
            anyhow::bail!(
                "--sasl-session-lifetime-ms must be 0 (no limit) or at least {MIN_SESSION_LIFETIME_MS}"
            );
        }
        if self.sasl_authentication_timeout_ms == 0 {
            anyhow::bail!("--sasl-authentication-timeout-ms must be above 0");
        }
        Ok(mechanisms)
    }

    /// The listener's SASL settings (`None`: SASL is off). Reads (or creates) the cluster's
    /// decoy secret in `store`.
    pub(crate) async fn settings(
        &self,
        store: Arc<dyn MetaStore>,
        tls: bool,
    ) -> anyhow::Result<Option<SaslSettings>> {
        let mechanisms = self.validate(tls)?;
        if mechanisms.is_empty() {
            return Ok(None);
        }
        let authenticator = cluster_authenticator(store, mechanisms)
            .await
            .context("reading the cluster's SASL decoy secret from the metadata store")?;
        Ok(Some(SaslSettings {
            authenticator,
            session_lifetime: (self.sasl_session_lifetime_ms > 0)
                .then(|| Duration::from_millis(self.sasl_session_lifetime_ms)),
            failure_delay: Duration::from_millis(self.sasl_failure_delay_ms),
            authentication_timeout: Duration::from_millis(self.sasl_authentication_timeout_ms),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mechanisms: &[&str], allow_plain: bool, lifetime_ms: u64) -> KafkaSaslArgs {
        KafkaSaslArgs {
            sasl_mechanisms: mechanisms.iter().map(|m| m.to_string()).collect(),
            sasl_allow_plain_without_tls: allow_plain,
            sasl_session_lifetime_ms: lifetime_ms,
            sasl_failure_delay_ms: 100,
            sasl_authentication_timeout_ms: 10_000,
        }
    }

    #[test]
    fn mechanisms_parse_in_order_and_unknown_ones_fail() {
        let parsed = args(&["scram-sha-512", " PLAIN", "", "SCRAM-SHA-512"], false, 0)
            .mechanisms()
            .unwrap();
        assert_eq!(parsed, [Mechanism::ALL[2], Mechanism::Plain]);
        assert!(args(&[""], false, 0).mechanisms().unwrap().is_empty());
        let err = args(&["GSSAPI"], false, 0).mechanisms().unwrap_err();
        assert!(err.to_string().contains("GSSAPI"), "{err}");
    }

    #[test]
    fn plain_needs_tls_unless_allowed() {
        let err = args(&["PLAIN"], false, 0).validate(false).unwrap_err();
        assert!(
            err.to_string().contains("--sasl-allow-plain-without-tls"),
            "{err}"
        );
        assert!(args(&["PLAIN"], false, 0).validate(true).is_ok());
        assert!(args(&["PLAIN"], true, 0).validate(false).is_ok());
        assert!(args(&["SCRAM-SHA-256"], false, 0).validate(false).is_ok());
    }

    #[test]
    fn session_lifetime_is_zero_or_at_least_a_second() {
        assert!(
            args(&["SCRAM-SHA-256"], false, 500)
                .validate(false)
                .is_err()
        );
        assert!(
            args(&["SCRAM-SHA-256"], false, 1000)
                .validate(false)
                .is_ok()
        );
    }
}
