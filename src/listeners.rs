//! Named Kafka listeners (docs/security.md, "Listeners"): Kafka's `listeners`,
//! `advertised.listeners` and `listener.security.protocol.map`, so that one gateway can serve,
//! say, plaintext to clients inside the cluster and SASL_SSL to clients outside it, each on its
//! own port and with its own advertised address.
//!
//! Why Kafka's syntax: operators already write it, and clients see the same behaviour: a
//! client is answered (Metadata, FindCoordinator, DescribeCluster) with the addresses of the
//! listener it connected to, so a client that came in through the TLS port keeps to TLS ports.
//!
//! The certificate flags (`--kafka-tls-*`) apply to every SSL and SASL_SSL listener, the SASL
//! flags to every SASL_PLAINTEXT and SASL_SSL listener. Without `--listeners` there is one
//! listener, `--kafka-addr` advertised as `--advertised-addr`, its protocol following from the
//! TLS and SASL flags, as before.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, bail};

/// What a listener speaks, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// The protocol of a listener configured by the single-listener flags.
    pub(crate) fn of(tls: bool, sasl: bool) -> Self {
        match (tls, sasl) {
            (false, false) => SecurityProtocol::Plaintext,
            (true, false) => SecurityProtocol::Ssl,
            (false, true) => SecurityProtocol::SaslPlaintext,
            (true, true) => SecurityProtocol::SaslSsl,
        }
    }

    pub(crate) fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub(crate) fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One listener to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerSpec {
    /// Upper-case name (`PLAINTEXT`, `EXTERNAL`, ...).
    pub(crate) name: String,
    pub(crate) bind: SocketAddr,
    /// `host:port` given to clients of this listener; `None`: the bound address.
    pub(crate) advertised: Option<String>,
    pub(crate) protocol: SecurityProtocol,
}

/// Parses `--listeners`, `--advertised-listeners` and `--listener-security-protocol-map`
/// (each a comma-separated list; empty entries ignored). The first listener is the primary
/// one: its advertised address names this broker (its node id) and is the one written into
/// leases for peers that know no listeners.
pub(crate) fn parse_listeners(
    listeners: &[String],
    advertised: &[String],
    protocol_map: &[String],
) -> anyhow::Result<Vec<ListenerSpec>> {
    let protocols = parse_protocol_map(protocol_map)?;
    let mut specs: Vec<ListenerSpec> = Vec::new();
    for entry in non_empty(listeners) {
        let (name, addr) = split_listener(entry, "--listeners")?;
        if specs.iter().any(|s| s.name == name) {
            bail!("--listeners names {name} twice");
        }
        let bind: SocketAddr = addr.parse().with_context(|| {
            format!("--listeners {entry:?}: {addr:?} is not an IP address and port (use 0.0.0.0:PORT to listen on every interface)")
        })?;
        let protocol = match protocols.get(&name) {
            Some(p) => *p,
            None => SecurityProtocol::parse(&name).with_context(|| {
                format!(
                    "--listeners: listener {name} has no security protocol: name it PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, or map it with --listener-security-protocol-map {name}:PROTOCOL"
                )
            })?,
        };
        specs.push(ListenerSpec {
            name,
            bind,
            advertised: None,
            protocol,
        });
    }
    for entry in non_empty(advertised) {
        let (name, addr) = split_listener(entry, "--advertised-listeners")?;
        crate::args::split_host_port(&addr)
            .with_context(|| format!("--advertised-listeners {entry:?}"))?;
        let spec = specs.iter_mut().find(|s| s.name == name).with_context(|| {
            format!("--advertised-listeners names {name}, which is not in --listeners")
        })?;
        if spec.advertised.replace(addr).is_some() {
            bail!("--advertised-listeners names {name} twice");
        }
    }
    if let Some(unused) = protocols
        .keys()
        .find(|n| !specs.iter().any(|s| &&s.name == n))
    {
        bail!("--listener-security-protocol-map names {unused}, which is not in --listeners");
    }
    Ok(specs)
}

fn non_empty(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter().map(|e| e.trim()).filter(|e| !e.is_empty())
}

/// `NAME://host:port` into the upper-cased name and the address.
fn split_listener(entry: &str, flag: &str) -> anyhow::Result<(String, String)> {
    let (name, addr) = entry
        .split_once("://")
        .with_context(|| format!("{flag} {entry:?}: expected NAME://HOST:PORT"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("{flag} {entry:?}: a listener name is letters, digits, '_' and '-'");
    }
    Ok((name.to_ascii_uppercase(), addr.to_string()))
}

fn parse_protocol_map(entries: &[String]) -> anyhow::Result<BTreeMap<String, SecurityProtocol>> {
    let mut map = BTreeMap::new();
    for entry in non_empty(entries) {
        let (name, protocol) = entry.split_once(':').with_context(|| {
            format!("--listener-security-protocol-map {entry:?}: expected NAME:PROTOCOL")
        })?;
        let protocol = SecurityProtocol::parse(protocol.trim()).with_context(|| {
            format!(
                "--listener-security-protocol-map {entry:?}: the protocol is PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            )
        })?;
        if map
            .insert(name.trim().to_ascii_uppercase(), protocol)
            .is_some()
        {
            bail!("--listener-security-protocol-map names {name} twice");
        }
    }
    Ok(map)
}

/// Checks that the TLS and SASL flags fit the listeners: a TLS listener needs the certificate,
/// a SASL listener the mechanisms, and flags that no listener uses are a mistake worth
/// stopping for (a certificate given for nothing usually means a listener was forgotten).
pub(crate) fn check_security(
    specs: &[ListenerSpec],
    tls_configured: bool,
    sasl_configured: bool,
) -> anyhow::Result<()> {
    let needs_tls = specs.iter().find(|s| s.protocol.tls());
    let needs_sasl = specs.iter().find(|s| s.protocol.sasl());
    match (needs_tls, tls_configured) {
        (Some(s), false) => bail!(
            "listener {} is {} but no certificate is configured: add --kafka-tls-cert and --kafka-tls-key",
            s.name,
            s.protocol.name()
        ),
        (None, true) => bail!(
            "--kafka-tls-cert is set but no listener speaks TLS: name one SSL or SASL_SSL in --listeners (or map it so)"
        ),
        _ => {}
    }
    match (needs_sasl, sasl_configured) {
        (Some(s), false) => bail!(
            "listener {} is {} but no SASL mechanism is enabled: add --sasl-mechanisms",
            s.name,
            s.protocol.name()
        ),
        (None, true) => bail!(
            "--sasl-mechanisms is set but no listener uses SASL: name one SASL_PLAINTEXT or SASL_SSL in --listeners (or map it so)"
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Vec<String> {
        s.split(',').map(str::to_string).collect()
    }

    #[test]
    fn listeners_take_their_protocol_from_the_name_or_the_map() {
        let specs = parse_listeners(
            &list("PLAINTEXT://127.0.0.1:9092, external://0.0.0.0:9094,"),
            &list("EXTERNAL://kafka.example.com:443"),
            &list("External:sasl_ssl"),
        )
        .unwrap();
        assert_eq!(
            specs,
            [
                ListenerSpec {
                    name: "PLAINTEXT".into(),
                    bind: "127.0.0.1:9092".parse().unwrap(),
                    advertised: None,
                    protocol: SecurityProtocol::Plaintext,
                },
                ListenerSpec {
                    name: "EXTERNAL".into(),
                    bind: "0.0.0.0:9094".parse().unwrap(),
                    advertised: Some("kafka.example.com:443".into()),
                    protocol: SecurityProtocol::SaslSsl,
                },
            ]
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = |l: &str, a: &str, m: &str| {
            parse_listeners(&list(l), &list(a), &list(m))
                .unwrap_err()
                .to_string()
        };
        assert!(err("INTERNAL://127.0.0.1:1", "", "").contains("no security protocol"));
        assert!(err("SSL://127.0.0.1:1,ssl://127.0.0.1:2", "", "").contains("twice"));
        assert!(err("SSL://kafka:1", "", "").contains("not an IP address"));
        assert!(err("127.0.0.1:1", "", "").contains("NAME://HOST:PORT"));
        assert!(err("SSL://127.0.0.1:1", "OTHER://h:1", "").contains("not in --listeners"));
        assert!(err("SSL://127.0.0.1:1", "SSL://nohost", "").contains("--advertised-listeners"));
        assert!(err("SSL://127.0.0.1:1", "", "OTHER:SSL").contains("not in --listeners"));
        assert!(err("A://127.0.0.1:1", "", "A:TLS").contains("PLAINTEXT, SSL"));
    }

    #[test]
    fn security_flags_must_fit_the_listeners() {
        let specs = |l: &str| parse_listeners(&list(l), &[], &[]).unwrap();
        let plain_and_tls = specs("PLAINTEXT://127.0.0.1:1,SASL_SSL://127.0.0.1:2");
        assert!(check_security(&plain_and_tls, true, true).is_ok());
        let e = check_security(&plain_and_tls, false, true).unwrap_err();
        assert!(e.to_string().contains("--kafka-tls-cert"), "{e}");
        let e = check_security(&plain_and_tls, true, false).unwrap_err();
        assert!(e.to_string().contains("--sasl-mechanisms"), "{e}");
        let plain = specs("PLAINTEXT://127.0.0.1:1");
        assert!(check_security(&plain, false, false).is_ok());
        assert!(check_security(&plain, true, false).is_err());
        assert!(check_security(&plain, false, true).is_err());
    }
}
