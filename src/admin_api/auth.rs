//! Bearer-token authentication of the admin API, as one middleware in front of every `/v1`
//! route.
//!
//! Mutations (every method but GET and HEAD) always need the admin token; reads need a token
//! when `--admin-auth-reads` is set, the admin token or the read-only one (a token that may
//! read but never mutate: 403 `read_only_token`). No token presented: 401 with
//! `WWW-Authenticate: Bearer`; a wrong one: 403. With no admin token configured at all,
//! mutations are refused (403 `mutations_disabled`): an admin API is never open by default.
//! Both tokens are always compared, each in time that does not depend on what the presented
//! token shares with it (see [`token_matches`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Who may call the admin API.
#[derive(Clone, Default)]
pub(crate) struct AdminAuth {
    token: Option<Arc<[u8]>>,
    /// May read, never mutate.
    read_token: Option<Arc<[u8]>>,
    protect_reads: bool,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("read_token", &self.read_token.as_ref().map(|_| "<set>"))
            .field("protect_reads", &self.protect_reads)
            .finish()
    }
}

impl AdminAuth {
    /// `token`: the configured token (surrounding whitespace, e.g. a file's newline, is
    /// ignored; an empty one counts as none). `protect_reads`: reads need it too.
    pub(crate) fn new(token: Option<&str>, protect_reads: bool) -> Self {
        AdminAuth {
            token: configured(token),
            read_token: None,
            protect_reads,
        }
    }

    /// Adds a read-only token (same rules as the admin token; it must differ from it).
    pub(crate) fn with_read_token(mut self, read_token: Option<&str>) -> anyhow::Result<Self> {
        self.read_token = configured(read_token);
        if self.read_token.is_some() && self.read_token == self.token {
            anyhow::bail!("the read-only admin token must differ from the admin token");
        }
        Ok(self)
    }

    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub(crate) fn has_read_token(&self) -> bool {
        self.read_token.is_some()
    }

    /// Whether a request with `method` and `headers` may proceed.
    pub(crate) fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let read = method == Method::GET || method == Method::HEAD;
        if read && !self.protect_reads {
            return Ok(());
        }
        if self.token.is_none() && (!read || self.read_token.is_none()) {
            return Err(if read {
                ApiError::Unauthorized
            } else {
                ApiError::MutationsDisabled
            });
        }
        let Some(presented) = bearer(headers) else {
            return Err(ApiError::Unauthorized);
        };
        let matches = |t: &Option<Arc<[u8]>>| {
            t.as_deref()
                .is_some_and(|t| token_matches(presented.as_bytes(), t))
        };
        // Both compared, always: which one matched must not show in the time taken.
        let (admin, read_only) = (matches(&self.token), matches(&self.read_token));
        match (admin, read_only) {
            (true, _) => Ok(()),
            (false, true) if read => Ok(()),
            (false, true) => Err(ApiError::ReadOnlyToken),
            (false, false) => Err(ApiError::Forbidden),
        }
    }
}

/// A configured token: surrounding whitespace (a file's newline) ignored, empty counts as none.
fn configured(token: Option<&str>) -> Option<Arc<[u8]>> {
    token
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| Arc::from(t.as_bytes()))
}

pub(crate) use kafscale_shared::bearer::{bearer_token as bearer, token_matches};

/// The middleware: answers 401/403 itself, or passes the request on.
pub(crate) async fn require_token(
    State(auth): State<AdminAuth>,
    request: Request,
    next: Next,
) -> Response {
    match auth.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            tracing::info!(method = %request.method(), path = request.uri().path(), code = e.code(), "admin request refused");
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};

    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(a).expect("ascii"),
            );
        }
        h
    }

    #[test]
    fn mutations_need_the_token_reads_only_when_asked() {
        let auth = AdminAuth::new(Some(" s3cret\n"), false);
        assert!(auth.check(&Method::GET, &headers(None)).is_ok());
        let post = Method::POST;
        assert!(matches!(
            auth.check(&post, &headers(None)),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            auth.check(&post, &headers(Some("Basic czNjcmV0"))),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            auth.check(&post, &headers(Some("Bearer nope"))),
            Err(ApiError::Forbidden)
        ));
        assert!(auth.check(&post, &headers(Some("bearer s3cret"))).is_ok());
        assert!(
            auth.check(&Method::DELETE, &headers(Some("Bearer s3cret")))
                .is_ok()
        );

        let strict = AdminAuth::new(Some("s3cret"), true);
        assert!(matches!(
            strict.check(&Method::GET, &headers(None)),
            Err(ApiError::Unauthorized)
        ));
        assert!(
            strict
                .check(&Method::GET, &headers(Some("Bearer s3cret")))
                .is_ok()
        );
    }

    #[test]
    fn a_read_only_token_reads_and_never_mutates() {
        let auth = AdminAuth::new(Some("admin-token"), true)
            .with_read_token(Some("read-token\n"))
            .unwrap();
        let read = headers(Some("Bearer read-token"));
        assert!(auth.check(&Method::GET, &read).is_ok());
        assert!(auth.check(&Method::HEAD, &read).is_ok());
        for mutation in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(matches!(
                auth.check(&mutation, &read),
                Err(ApiError::ReadOnlyToken)
            ));
            assert!(
                auth.check(&mutation, &headers(Some("Bearer admin-token")))
                    .is_ok()
            );
        }
        assert!(matches!(
            auth.check(&Method::GET, &headers(Some("Bearer read-tokenX"))),
            Err(ApiError::Forbidden)
        ));

        // Without an admin token the read-only one still reads; mutations stay disabled.
        let reads_only = AdminAuth::new(None, true)
            .with_read_token(Some("read-token"))
            .unwrap();
        assert!(reads_only.check(&Method::GET, &read).is_ok());
        assert!(matches!(
            reads_only.check(&Method::GET, &headers(None)),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            reads_only.check(&Method::POST, &read),
            Err(ApiError::MutationsDisabled)
        ));

        let same = AdminAuth::new(Some("one-token"), true).with_read_token(Some(" one-token "));
        assert!(same.is_err());
    }

    #[test]
    fn without_a_token_mutations_are_refused() {
        for auth in [
            AdminAuth::new(None, false),
            AdminAuth::new(Some("  "), false),
        ] {
            assert!(!auth.has_token());
            assert!(auth.check(&Method::GET, &headers(None)).is_ok());
            assert!(matches!(
                auth.check(&Method::POST, &headers(Some("Bearer anything"))),
                Err(ApiError::MutationsDisabled)
            ));
        }
    }
}
