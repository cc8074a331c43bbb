//! PLAIN (RFC 4616): one client message `authzid NUL authcid NUL passwd`, no server message.
//! The password is checked against the user's stored SCRAM credential, so PLAIN needs no
//! store of its own. PLAIN sends the password in clear: only behind TLS.

use crate::SaslError;

/// Longest PLAIN message accepted (RFC 4616 allows 255 bytes per field).
pub(crate) const MAX_MESSAGE_LEN: usize = 3 * 255 + 2;

fn malformed(reason: &'static str) -> SaslError {
    SaslError::Malformed {
        mechanism: "PLAIN",
        reason,
    }
}

/// The user and password of a PLAIN message (borrowed; the one copy of the password, made for
/// the check on the blocking pool, is wiped after it).
#[derive(PartialEq, Eq)]
pub(crate) struct PlainMessage<'a> {
    pub(crate) user: &'a str,
    pub(crate) password: &'a str,
}

/// Parses a PLAIN message; an authorization id must be absent or the user itself.
pub(crate) fn parse_plain(message: &[u8]) -> Result<PlainMessage<'_>, SaslError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(malformed("message too long"));
    }
    let text = std::str::from_utf8(message).map_err(|_| malformed("not UTF-8"))?;
    let mut fields = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed("not three NUL-separated fields"));
    };
    if user.is_empty() {
        return Err(malformed("empty user name"));
    }
    if password.is_empty() {
        return Err(malformed("empty password"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::AuthzidMismatch);
    }
    Ok(PlainMessage { user, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_authzid() {
        let m = parse_plain(b"\0alice\0secret").unwrap();
        assert_eq!((m.user, m.password), ("alice", "secret"));
        let m = parse_plain(b"alice\0alice\0secret").unwrap();
        assert_eq!((m.user, m.password), ("alice", "secret"));
    }

    #[test]
    fn refuses_malformed_messages_and_other_authzids() {
        assert!(matches!(
            parse_plain(b"bob\0alice\0secret"),
            Err(SaslError::AuthzidMismatch)
        ));
        let too_long = vec![b'a'; MAX_MESSAGE_LEN + 1];
        for bad in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0\0secret",
            b"\0alice\0",
            b"\0alice\0secret\0",
            b"\0al\xffice\0secret",
            &too_long,
        ] {
            assert!(
                matches!(parse_plain(bad), Err(SaslError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }
}
