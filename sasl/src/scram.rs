//! The SCRAM server exchange (RFC 5802, RFC 7677) as pure steps: parse the client-first
//! message, build the server-first message, parse and verify the client-final message, sign
//! the server-final message. [`crate::Session`] strings them together around the credential
//! lookup.
//!
//! Accepted: GS2 flag `n` or `y` (no channel binding is offered, so `p=` is refused), an
//! authorization id only when it names the user itself, `=2C`/`=3D` escapes in names,
//! optional extensions (ignored, except Kafka's `tokenauth=true`, refused: there are no
//! delegation tokens). Refused: mandatory extensions (`m=`), anything not in the grammar,
//! messages over [`MAX_MESSAGE_LEN`] bytes. Proofs are compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::crypto::{constant_time_eq, hash, hmac, xor};
use crate::{SaslError, ScramCredential, ScramMechanism};

/// Longest client message accepted (real ones are a few hundred bytes).
pub(crate) const MAX_MESSAGE_LEN: usize = 4096;

const NAME: &str = "SCRAM";

fn malformed(reason: &'static str) -> SaslError {
    SaslError::Malformed {
        mechanism: NAME,
        reason,
    }
}

/// What the server keeps of a parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFirst {
    /// The user, unescaped.
    pub(crate) username: String,
    /// The GS2 header as sent (`n,,`, `y,,`, `n,a=user,`): the client-final's `c=` repeats it.
    pub(crate) gs2_header: String,
    /// client-first-message-bare, part of the AuthMessage.
    pub(crate) bare: String,
    pub(crate) client_nonce: String,
}

/// Parses a client-first message.
pub(crate) fn parse_client_first(message: &[u8]) -> Result<ClientFirst, SaslError> {
    let text = message_text(message)?;
    let mut parts = text.splitn(3, ',');
    let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("no GS2 header"));
    };
    check_gs2_flag(flag)?;
    let authzid = match authzid {
        "" => None,
        a => Some(saslname(
            a.strip_prefix("a=")
                .ok_or(malformed("bad authorization id"))?,
        )?),
    };
    let gs2_header = text[..text.len() - bare.len()].to_string();
    let mut attributes = bare.split(',');
    let user = attributes.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err(SaslError::ExtensionNotSupported("mandatory extension"));
    }
    let username = saslname(user.strip_prefix("n=").ok_or(malformed("no user name"))?)?;
    let client_nonce = attributes
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .ok_or(malformed("no nonce"))?;
    check_nonce(client_nonce)?;
    check_extensions(attributes)?;
    if authzid.is_some_and(|a| a != username) {
        return Err(SaslError::AuthzidMismatch);
    }
    Ok(ClientFirst {
        username,
        gs2_header,
        bare: bare.to_string(),
        client_nonce: client_nonce.to_string(),
    })
}

fn message_text(message: &[u8]) -> Result<&str, SaslError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(malformed("message too long"));
    }
    std::str::from_utf8(message).map_err(|_| malformed("not UTF-8"))
}

fn check_gs2_flag(flag: &str) -> Result<(), SaslError> {
    match flag {
        // `y`: the client could bind but thinks the server cannot, which is right.
        "n" | "y" => Ok(()),
        f if f.starts_with("p=") => Err(SaslError::ChannelBindingNotSupported),
        _ => Err(malformed("bad GS2 channel binding flag")),
    }
}

/// Unescapes a `saslname` (`=2C` is `,`, `=3D` is `=`; any other `=` is invalid).
fn saslname(escaped: &str) -> Result<String, SaslError> {
    if escaped.is_empty() {
        return Err(malformed("empty name"));
    }
    let mut name = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('=') {
        name.push_str(&rest[..at]);
        let escape = rest
            .get(at..at + 3)
            .ok_or(malformed("bad escape in name"))?;
        name.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return Err(malformed("bad escape in name")),
        });
        rest = &rest[at + 3..];
    }
    name.push_str(rest);
    if name.contains('\0') {
        return Err(malformed("NUL in name"));
    }
    Ok(name)
}

/// A nonce is printable ASCII other than `,` (RFC 5802 `printable`).
fn check_nonce(nonce: &str) -> Result<(), SaslError> {
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(malformed("bad nonce"));
    }
    Ok(())
}

/// Optional extensions: `key=value` each; Kafka's `tokenauth=true` is refused, others ignored.
fn check_extensions<'a>(attributes: impl Iterator<Item = &'a str>) -> Result<(), SaslError> {
    for attribute in attributes {
        let (key, value) = attribute
            .split_once('=')
            .ok_or(malformed("bad extension"))?;
        if key.is_empty() {
            return Err(malformed("bad extension"));
        }
        if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
            return Err(SaslError::ExtensionNotSupported("tokenauth"));
        }
    }
    Ok(())
}

/// The server-first message: the combined nonce, the salt and the iteration count.
pub(crate) fn server_first(combined_nonce: &str, salt: &[u8], iterations: u32) -> String {
    format!(
        "r={combined_nonce},s={},i={iterations}",
        BASE64.encode(salt)
    )
}

/// What is checked of a client-final message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFinal {
    /// client-final-message-without-proof, part of the AuthMessage.
    pub(crate) without_proof: String,
    pub(crate) proof: Vec<u8>,
}

/// Parses a client-final message and checks its channel binding and nonce against the
/// exchange so far.
///
/// The nonce must be the server-first's (`combined_nonce`), or the client nonce followed by
/// it: librdkafka before 2.6.1 (kcat on Debian 12, many distributions) prepends its own nonce
/// once more, and Kafka brokers up to 3.9 accept that. Both forms contain the whole
/// server-first nonce, fresh server part included, so a replayed client-final still fails.
pub(crate) fn parse_client_final(
    message: &[u8],
    mechanism: ScramMechanism,
    gs2_header: &str,
    client_nonce: &str,
    combined_nonce: &str,
) -> Result<ClientFinal, SaslError> {
    let text = message_text(message)?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(malformed("no proof"))?;
    let proof = BASE64
        .decode(proof)
        .map_err(|_| malformed("proof is not base64"))?;
    if proof.len() != mechanism.hash_len() {
        return Err(malformed("proof has the wrong length"));
    }
    let mut attributes = without_proof.split(',');
    let binding = attributes
        .next()
        .and_then(|c| c.strip_prefix("c="))
        .ok_or(malformed("no channel binding"))?;
    let binding = BASE64
        .decode(binding)
        .map_err(|_| malformed("channel binding is not base64"))?;
    if binding.starts_with(b"p=") {
        return Err(SaslError::ChannelBindingNotSupported);
    }
    if binding != gs2_header.as_bytes() {
        return Err(SaslError::ChannelBindingMismatch);
    }
    let nonce = attributes
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .ok_or(malformed("no nonce"))?;
    let librdkafka_form = nonce
        .strip_prefix(client_nonce)
        .is_some_and(|rest| rest == combined_nonce);
    if nonce != combined_nonce && !librdkafka_form {
        return Err(SaslError::NonceMismatch);
    }
    check_extensions(attributes)?;
    Ok(ClientFinal {
        without_proof: without_proof.to_string(),
        proof,
    })
}

/// Checks the client's proof of the AuthMessage against the credential; gives the
/// server-final message (`v=` ServerSignature) when it holds.
pub(crate) fn verify_proof(
    credential: &ScramCredential,
    auth_message: &str,
    proof: &[u8],
) -> Result<String, SaslError> {
    let mechanism = credential.mechanism;
    let client_signature = hmac(mechanism, &credential.stored_key, auth_message.as_bytes());
    let client_key = xor(proof, &client_signature);
    if proof.len() != client_signature.len()
        || !constant_time_eq(&hash(mechanism, &client_key), &credential.stored_key)
    {
        return Err(SaslError::AuthenticationFailed);
    }
    let server_signature = hmac(mechanism, &credential.server_key, auth_message.as_bytes());
    Ok(format!("v={}", BASE64.encode(server_signature)))
}

/// The credential answered for an unknown user, so the exchange fails only at its last step
/// and the server-first message looks like a real one: its salt is derived from the user name
/// and a server secret (stable across attempts), and no proof can match its keys.
pub(crate) fn decoy_credential(
    mechanism: ScramMechanism,
    secret: &[u8],
    username: &str,
    iterations: u32,
) -> ScramCredential {
    let mut input = Vec::with_capacity(username.len() + 32);
    input.extend_from_slice(b"kafscale decoy salt\0");
    input.extend_from_slice(mechanism.name().as_bytes());
    input.push(0);
    input.extend_from_slice(username.as_bytes());
    let salt = hmac(ScramMechanism::Sha256, secret, &input);
    ScramCredential {
        mechanism,
        salt,
        iterations,
        // Never H(anything) in practice; verification of a decoy fails regardless.
        stored_key: vec![0; mechanism.hash_len()],
        server_key: vec![0; mechanism.hash_len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_first_parses_names_nonces_and_headers() {
        let first = parse_client_first(b"n,,n=user,r=abc").unwrap();
        assert_eq!(first.username, "user");
        assert_eq!(first.gs2_header, "n,,");
        assert_eq!(first.bare, "n=user,r=abc");
        assert_eq!(first.client_nonce, "abc");

        let first = parse_client_first(b"y,a=a=2Cb=3Dc,n=a=2Cb=3Dc,r=x,ext=1").unwrap();
        assert_eq!(first.username, "a,b=c");
        assert_eq!(first.gs2_header, "y,a=a=2Cb=3Dc,");
    }

    #[test]
    fn client_first_refusals() {
        let refused = |m: &[u8]| parse_client_first(m).unwrap_err();
        assert!(matches!(
            refused(b"p=tls-unique,,n=u,r=x"),
            SaslError::ChannelBindingNotSupported
        ));
        assert!(matches!(
            refused(b"n,a=other,n=u,r=x"),
            SaslError::AuthzidMismatch
        ));
        assert!(matches!(
            refused(b"n,,m=ext,n=u,r=x"),
            SaslError::ExtensionNotSupported(_)
        ));
        assert!(matches!(
            refused(b"n,,n=u,r=x,tokenauth=true"),
            SaslError::ExtensionNotSupported("tokenauth")
        ));
        for bad in [
            &b""[..],
            b"n",
            b"n,,",
            b"x,,n=u,r=x",
            b"n,b=u,n=u,r=x",
            b"n,,n=,r=x",
            b"n,,n=u=2X,r=x",
            b"n,,n=u=2,r=x",
            b"n,,n=u",
            b"n,,n=u,r=",
            b"n,,n=u,s=x",
            b"n,,r=x,n=u",
            b"n,,n=u,r=x,",
            b"n,,n=u,r=x,=1",
            b"n,,n=u,r=x,noequals",
            b"n,,n=u\0,r=x",
            b"n,,n=u,r=\x7f",
            b"n,,n=\xff,r=x",
        ] {
            assert!(
                matches!(refused(bad), SaslError::Malformed { .. }),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("n,,n=u,r={}", "x".repeat(MAX_MESSAGE_LEN));
        assert!(matches!(
            refused(long.as_bytes()),
            SaslError::Malformed { .. }
        ));
    }

    #[test]
    fn client_final_refusals() {
        let parse = |m: &str| {
            parse_client_final(m.as_bytes(), ScramMechanism::Sha256, "n,,", "abc", "abcdef")
                .unwrap_err()
        };
        let proof = BASE64.encode([0u8; 32]);
        for nonce in [
            "abcxxx",
            "abcabcdefx",
            "xabcdef",
            "abcdefabcdef",
            "ababcdef",
        ] {
            assert!(
                matches!(
                    parse(&format!("c=biws,r={nonce},p={proof}")),
                    SaslError::NonceMismatch
                ),
                "{nonce}"
            );
        }
        // "y,," instead of "n,,"
        assert!(matches!(
            parse(&format!("c=eSws,r=abcdef,p={proof}")),
            SaslError::ChannelBindingMismatch
        ));
        let p_header = BASE64.encode("p=tls-unique,,");
        assert!(matches!(
            parse(&format!("c={p_header},r=abcdef,p={proof}")),
            SaslError::ChannelBindingNotSupported
        ));
        for bad in [
            String::new(),
            "c=biws,r=abcdef".to_string(),
            "c=biws,r=abcdef,p=!!".to_string(),
            format!("c=biws,r=abcdef,p={}", BASE64.encode([0u8; 31])),
            format!("r=abcdef,p={proof}"),
            format!("c=***,r=abcdef,p={proof}"),
            format!("c=biws,p={proof}"),
            format!("c=biws,r=abcdef,x,p={proof}"),
        ] {
            assert!(matches!(parse(&bad), SaslError::Malformed { .. }), "{bad}");
        }
        let ok = parse_client_final(
            format!("c=biws,r=abcdef,p={proof}").as_bytes(),
            ScramMechanism::Sha256,
            "n,,",
            "abc",
            "abcdef",
        )
        .unwrap();
        assert_eq!(ok.without_proof, "c=biws,r=abcdef");
        // librdkafka before 2.6.1: the client nonce once more in front.
        let old_librdkafka = parse_client_final(
            format!("c=biws,r=abcabcdef,p={proof}").as_bytes(),
            ScramMechanism::Sha256,
            "n,,",
            "abc",
            "abcdef",
        )
        .unwrap();
        assert_eq!(old_librdkafka.without_proof, "c=biws,r=abcabcdef");
    }
}
