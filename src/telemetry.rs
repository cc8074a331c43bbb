//! Logs and traces of a process.
//!
//! Logs go to stderr, filtered by `KAFSCALE_LOG` (default `info`). Traces are off unless an
//! OTLP endpoint is given, by the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable or the `--otlp-endpoint` flag; then the
//! `tracing` spans of the request paths (produce, segment, upload, commit, the indexer's commit
//! and store write, fetch and group requests, HTTP requests) are exported as OpenTelemetry
//! spans over OTLP/HTTP (protobuf), and W3C `traceparent` carries a trace from one process to
//! the next (see `kafscale_shared::trace_context`).
//!
//! The export goes through the same HTTP client as every other call of the process
//! (`kafscale_shared::http_client`). The SDK's batch processor exports from a thread of its
//! own, outside the tokio runtime, so each export is spawned onto the runtime and awaited.
//! Sampling, batching and resource attributes follow the standard `OTEL_*` variables
//! (`OTEL_TRACES_SAMPLER`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_RESOURCE_ATTRIBUTES`, ...); the
//! service name is `OTEL_SERVICE_NAME`, else `kafscale-<role>`.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use kafscale_shared::http_client::HttpClient;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How long one span export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the final flush at exit may take.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Tracing settings (on every command).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TelemetryArgs {
    /// Export traces over OTLP/HTTP to this collector base URL (for example
    /// http://otel-collector:4318; spans go to <URL>/v1/traces). Without it, the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variables switch traces
    /// on; with neither, traces are off.
    #[arg(long, global = true)]
    otlp_endpoint: Option<String>,
    /// The service name of the exported spans (default: OTEL_SERVICE_NAME, else
    /// kafscale-<role>).
    #[arg(long, global = true)]
    otel_service_name: Option<String>,
}

/// What must outlive the process's work: the tracer provider, flushed at exit.
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (at most [`SHUTDOWN_FLUSH`]).
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_FLUSH)
        {
            tracing::warn!(error = %e, "flushing the last spans failed");
        }
    }
}

/// Installs the log subscriber and, when asked for, the OpenTelemetry layer. `runtime` runs
/// the exports; `role` names the service by default.
pub(crate) fn init(
    args: &TelemetryArgs,
    role: &str,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<Telemetry> {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            EnvFilter::try_from_env("KAFSCALE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        );
    let provider = if traces_wanted(args) {
        Some(tracer_provider(args, role, runtime)?)
    } else {
        None
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("kafscale"))
            .with_filter(EnvFilter::new("info"))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("installing the log subscriber")?;
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

fn traces_wanted(args: &TelemetryArgs) -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled
        && (args.otlp_endpoint.is_some()
            || set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn tracer_provider(
    args: &TelemetryArgs,
    role: &str,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<SdkTracerProvider> {
    let client = ExportClient {
        client: HttpClient::new(Duration::from_secs(2)),
        runtime,
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_timeout(EXPORT_TIMEOUT);
    if let Some(base) = &args.otlp_endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = exporter
        .build()
        .context("setting up the OTLP span exporter")?;
    let service = args
        .otel_service_name
        .clone()
        .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok())
        .unwrap_or_else(|| format!("kafscale-{role}"));
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "kafscale.role",
            role.to_string(),
        ))
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The OTLP exporter's HTTP transport: the process's HTTP client, run on its tokio runtime.
#[derive(Debug)]
struct ExportClient {
    client: HttpClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<Bytes>,
    ) -> Result<opentelemetry_http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let answer = self
            .runtime
            .spawn(async move { client.send(request, EXPORT_TIMEOUT).await })
            .await??;
        Ok(answer)
    }
}
