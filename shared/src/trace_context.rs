//! W3C trace context across processes: one produce request is one trace, from the ingest
//! gateway's span through the segment upload and the commit call into the indexer's commit
//! and its store write.
//!
//! The tiers only use the OpenTelemetry *API* here; the binary installs the SDK, the exporter
//! and the global propagator when tracing is switched on (`OTEL_EXPORTER_OTLP_ENDPOINT`). With
//! tracing off, the global propagator is OpenTelemetry's no-op one and spans carry no
//! OpenTelemetry context, so [`inject`] writes nothing and [`request_span`] links nothing: the
//! calls cost a lookup, never a header.

use hyper::http::{HeaderMap, HeaderName, HeaderValue, Request};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current span's context (`traceparent`, `tracestate`) into outgoing `headers`.
pub fn inject(headers: &mut HeaderMap) {
    let context = Span::current().context();
    if !context.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(headers))
    });
}

/// The span of one incoming HTTP request, a child of the caller's span when the request
/// carries a valid `traceparent`.
pub fn request_span<B>(request: &Request<B>) -> Span {
    let span = tracing::info_span!(
        "http_request",
        method = %request.method(),
        path = %request.uri().path(),
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(request.headers()))
    });
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed, and then there is nothing to link.
        let _ = span.set_parent(parent);
    }
    span
}

/// Links `target` to `from` (a span that contributed to `target`'s work without being its
/// parent, such as the second produce request in a segment); nothing when either has no
/// OpenTelemetry context.
pub fn link(target: &Span, from: &Span) {
    let context = from.context();
    let from = context.span().span_context().clone();
    if from.is_valid() {
        target.add_link(from);
    }
}
