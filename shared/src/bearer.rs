//! Bearer tokens of kafscale's own HTTP APIs: the admin API's token and the cluster-internal
//! token that gateways present to the indexers (`--internal-token-file`).
//!
//! Why one module: both tokens are read the same way (a file, else an environment variable),
//! parsed from the same header and compared the same way, in time that does not reveal how
//! much of a guess was right. Keeping that in one place means one comparison to audit.
//! [`InternalToken`] never shows its value: its `Debug` is redacted and the header it builds
//! is marked sensitive, so neither logs nor error messages can carry it.

use std::path::Path;

use anyhow::Context;
use hyper::http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq;

/// The token configured by `--<name>-token-file` (read whole) or, without a file, the value
/// of the flag/environment variable. `file_flag` names the flag in the error.
pub fn read_token(
    file: Option<&Path>,
    value: Option<&str>,
    file_flag: &str,
) -> anyhow::Result<Option<String>> {
    match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {file_flag} {}", path.display()))
            .map(Some),
        None => Ok(value.map(str::to_string)),
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares in time that depends only on the expected token's length: the presented token is
/// padded or cut to that length and compared byte for byte without an early exit, and the
/// lengths are compared the same way.
pub fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    let mut padded = vec![0u8; expected.len()];
    let n = presented.len().min(expected.len());
    padded[..n].copy_from_slice(&presented[..n]);
    let same_len = (presented.len() as u64).ct_eq(&(expected.len() as u64));
    bool::from(padded.as_slice().ct_eq(expected) & same_len)
}

/// The cluster-internal shared secret: ingest gateways present it on commits and
/// DeleteRecords, fetch gateways on the watermark feed, and indexers require it there.
#[derive(Clone, PartialEq, Eq)]
pub struct InternalToken(String);

impl std::fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalToken(<redacted>)")
    }
}

impl InternalToken {
    /// The token in `raw`, surrounding whitespace (a file's newline) removed. An empty token
    /// is an error, not "no token": a Secret mounted empty must not silently open the
    /// indexers. A token must be a valid header value (visible ASCII).
    pub fn new(raw: &str) -> anyhow::Result<Self> {
        let token = raw.trim();
        if token.is_empty() {
            anyhow::bail!("the internal token is empty");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!("the internal token must be printable ASCII without spaces");
        }
        Ok(InternalToken(token.to_string()))
    }

    /// From `--internal-token-file` (wins) or `KAFSCALE_INTERNAL_TOKEN`; `None` when neither
    /// is set.
    pub fn configured(file: Option<&Path>, value: Option<&str>) -> anyhow::Result<Option<Self>> {
        read_token(file, value, "--internal-token-file")?
            .map(|raw| Self::new(&raw))
            .transpose()
    }

    /// Whether `headers` carry this token as `Authorization: Bearer`.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        bearer_token(headers).is_some_and(|t| token_matches(t.as_bytes(), self.0.as_bytes()))
    }

    /// The `Authorization` header value, marked sensitive (redacted in `Debug` output).
    pub fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        value.set_sensitive(true);
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(auth).expect("ascii"),
        );
        h
    }

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        assert!(!token_matches(b"s3cre", b"s3cret"));
        assert!(!token_matches(b"s3cret!", b"s3cret"));
        assert!(!token_matches(b"s3creT", b"s3cret"));
        assert!(!token_matches(b"", b"s3cret"));
        // A prefix padded with the padding byte is still not the token.
        assert!(!token_matches(b"ab\0", b"ab"));
    }

    #[test]
    fn internal_token_is_trimmed_and_never_empty() {
        let token = InternalToken::new(" s3cret\n").expect("valid");
        assert!(token.admits(&headers("Bearer s3cret")));
        assert!(token.admits(&headers("bearer  s3cret ")));
        assert!(!token.admits(&headers("Bearer s3cre")));
        assert!(!token.admits(&headers("Basic s3cret")));
        assert!(!token.admits(&HeaderMap::new()));
        assert!(InternalToken::new(" \n").is_err());
        assert!(InternalToken::new("two words").is_err());
    }

    #[test]
    fn internal_token_never_shows_its_value() {
        let token = InternalToken::new("s3cret").expect("valid");
        assert!(!format!("{token:?}").contains("s3cret"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, token.header_value());
        assert!(!format!("{h:?}").contains("s3cret"));
        assert_eq!(
            h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
            Some("Bearer s3cret")
        );
    }

    #[test]
    fn the_file_wins_over_the_variable() {
        let dir = std::env::temp_dir().join(format!("kafscale-bearer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").expect("write");
        let token = InternalToken::configured(Some(&file), Some("from-env")).expect("read");
        assert_eq!(token, Some(InternalToken::new("from-file").expect("valid")));
        let token = InternalToken::configured(None, Some("from-env")).expect("read");
        assert_eq!(token, Some(InternalToken::new("from-env").expect("valid")));
        assert_eq!(InternalToken::configured(None, None).expect("none"), None);
        std::fs::write(&file, "\n").expect("write");
        assert!(InternalToken::configured(Some(&file), None).is_err());
        assert!(InternalToken::configured(Some(&dir.join("missing")), None).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
