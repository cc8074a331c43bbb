//! The admin API's HTTP client: the process-wide client setup
//! (`kafscale_shared::http_client`; HTTP/1.1, HTTPS with `--tls-ca`), JSON in and out, and the
//! API's error bodies turned into readable errors.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use kafscale_shared::http_client::HttpClient;
use kafscale_tls::ClientTls;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::admin_api::ErrorBody;

/// How long one admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to one admin API.
pub(crate) struct AdminClient {
    base: String,
    token: Option<String>,
    client: HttpClient,
}

/// A response: its status and raw JSON body.
pub(crate) struct Answer {
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn parse<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).context("the admin API answered unexpected JSON")
    }

    /// The body, pretty-printed (for `--output json`).
    pub(crate) fn pretty(&self) -> String {
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

impl AdminClient {
    /// A client of the API at `base`; an `https://` base needs `tls` (the CA to trust).
    pub(crate) fn new(
        base: &str,
        token: Option<String>,
        tls: Option<ClientTls>,
    ) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        match (base.split_once("://").map(|(scheme, _)| scheme), &tls) {
            (Some("http"), _) | (Some("https"), Some(_)) => {}
            (Some("https"), None) => anyhow::bail!(
                "admin URL {base:?} is HTTPS: give the CA that signs its certificate with --tls-ca (KAFSCALE_ADMIN_TLS_CA)"
            ),
            _ => anyhow::bail!("admin URL {base:?} must start with http:// or https://"),
        }
        let client = HttpClient::with_tls(Duration::from_secs(5), tls.as_ref());
        Ok(AdminClient {
            base,
            token: token
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
            client,
        })
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(Method::GET, path, None).await
    }

    pub(crate) async fn delete(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(Method::DELETE, path, None).await
    }

    pub(crate) async fn put<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<Answer> {
        let json = serde_json::to_vec(body).context("encoding the request")?;
        self.send(Method::PUT, path, Some(Bytes::from(json))).await
    }

    pub(crate) async fn post<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<Answer> {
        let json = serde_json::to_vec(body).context("encoding the request")?;
        self.send(Method::POST, path, Some(Bytes::from(json))).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let content_type = body.as_ref().map(|_| "application/json");
        let mut request = self
            .client
            .request(method.clone(), &url, content_type, body.unwrap_or_default())
            .with_context(|| format!("bad admin URL {url:?}"))?;
        let headers = request.headers_mut();
        headers.insert(
            hyper::header::ACCEPT,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        if let Some(token) = &self.token {
            let value = hyper::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the admin token holds characters a header cannot carry")?;
            headers.insert(hyper::header::AUTHORIZATION, value);
        }
        let answer = self
            .client
            .send(request, REQUEST_TIMEOUT)
            .await
            .with_context(|| {
                format!("{method} {url} (is kafscale serving HTTP there? set KAFSCALE_ADMIN_URL)")
            })?;
        let (status, body) = (answer.status(), answer.into_body());
        if status.is_success() {
            return Ok(Answer { body });
        }
        Err(api_error(status, &body))
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> anyhow::Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => {
            let hint = match (status, e.coordinator) {
                (StatusCode::UNAUTHORIZED, _) => {
                    " (set KAFSCALE_ADMIN_TOKEN or --token)".to_string()
                }
                (_, Some(c)) => format!(" (coordinator: {c})"),
                _ => String::new(),
            };
            anyhow::anyhow!("{} {}: {}{hint}", status.as_u16(), e.code, e.message)
        }
        Err(_) => anyhow::anyhow!(
            "{}: {}",
            status,
            String::from_utf8_lossy(body)
                .chars()
                .take(500)
                .collect::<String>()
        ),
    }
}

/// `s` as one percent-encoded path segment.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("demo-1.x_y"), "demo-1.x_y");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment("ü"), "%C3%BC");
    }

    #[test]
    fn api_errors_read_well() {
        let e = api_error(
            StatusCode::FORBIDDEN,
            br#"{"code":"forbidden","message":"wrong bearer token"}"#,
        );
        assert_eq!(e.to_string(), "403 forbidden: wrong bearer token");
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert!(e.to_string().starts_with("502 Bad Gateway"));
    }

    #[test]
    fn an_https_url_needs_a_ca_and_other_schemes_are_refused() {
        let err = AdminClient::new("https://x", None, None)
            .err()
            .expect("no ca");
        assert!(err.to_string().contains("--tls-ca"), "{err}");
        assert!(AdminClient::new("ftp://x", None, None).is_err());
        assert!(AdminClient::new("localhost:9093", None, None).is_err());
        assert!(AdminClient::new("http://localhost:9093/", None, None).is_ok());
    }
}
