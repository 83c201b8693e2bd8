//! Logs and traces: the `tracing` subscriber of the binary.
//!
//! Logs go to stderr as text or JSON (each line of a request carries its
//! `request_id`). With `[traces] otlp_endpoint` set, the same spans are also
//! exported as OpenTelemetry traces over OTLP/HTTP: the request span continues
//! the caller's `traceparent`, engine, store, index, embedder and LLM calls are
//! its children, and a worker's batch span links to the request behind each of
//! its jobs (the trace context travels with the job, see
//! `engram_core::telemetry`).

use crate::error::{Context as _, Result};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::collections::HashMap;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TracesConfig;

/// What to flush at exit.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Export the spans still buffered (bounded by the export timeout).
    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            let r = tokio::task::spawn_blocking(move || p.shutdown()).await;
            if let Ok(Err(e)) = r {
                eprintln!("engram: flushing traces failed: {e}");
            }
        }
    }
}

/// What every output layer sits on: the registry behind the level filter.
type Base = tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>;

/// `ENGRAM_LOG` if set, else the node's default.
fn filter() -> EnvFilter {
    filter_or("info,tantivy=warn")
}

fn filter_or(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("ENGRAM_LOG").unwrap_or_else(|_| EnvFilter::new(default))
}

/// Colour only on a terminal: a log redirected to a file or collected by a
/// container runtime gets plain text, not escape sequences. `NO_COLOR`
/// (https://no-color.org) turns it off on a terminal too.
fn ansi() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Logs only, for the short-lived commands.
pub fn init_logs(format: &str) {
    init_logs_with(format, filter());
}

/// Logs for a command that runs under another program (`engram mcp`, which
/// a desktop or IDE agent starts and whose stderr it keeps): warnings and
/// errors only unless `ENGRAM_LOG` asks for more, so the host's log is not
/// filled with a line per request.
pub fn init_quiet_logs(format: &str) {
    init_logs_with(format, filter_or("warn"));
}

fn init_logs_with(format: &str, filter: EnvFilter) {
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi())
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}

/// Logs, and traces when configured, for `serve` and `worker` (`role`).
pub fn init(format: &str, traces: &TracesConfig, role: &str) -> Result<Telemetry> {
    let provider = match &traces.otlp_endpoint {
        Some(root) => Some(provider(root, traces, role)?),
        None => None,
    };
    let mut layers: Vec<Box<dyn Layer<Base> + Send + Sync>> = Vec::new();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi())
        .with_writer(std::io::stderr);
    if format == "json" {
        layers.push(fmt.json().flatten_event(true).boxed());
    } else {
        layers.push(fmt.boxed());
    }
    if let Some(p) = &provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("engram"))
                .boxed(),
        );
    }
    tracing_subscriber::registry()
        .with(filter())
        .with(layers)
        .init();
    if provider.is_some() {
        engram_core::telemetry::install(engram_core::telemetry::Propagation {
            current,
            set_parent,
            add_link,
        });
        tracing::info!(
            endpoint = traces.otlp_endpoint.as_deref().unwrap_or_default(),
            "exporting traces over OTLP/HTTP"
        );
    }
    Ok(Telemetry { provider })
}

fn provider(root: &str, t: &TracesConfig, role: &str) -> Result<SdkTracerProvider> {
    // The exporter's HTTP client is rustls without a built-in provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let endpoint = format!("{}/v1/traces", root.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(&endpoint)
        .with_timeout(Duration::from_secs(t.timeout_secs))
        .build()
        .with_context(|| format!("setting up the OTLP exporter to {endpoint}"))?;
    let service = if t.service_name == "engram" && role != "serve" {
        format!("engram-{role}")
    } else {
        t.service_name.clone()
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            t.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

fn extract(traceparent: &str) -> opentelemetry::Context {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

fn current() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_sampled() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

fn set_parent(span: &tracing::Span, traceparent: &str) {
    let cx = extract(traceparent);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

fn add_link(span: &tracing::Span, traceparent: &str) {
    let sc = extract(traceparent).span().span_context().clone();
    if sc.is_valid() {
        span.add_link(sc);
    }
}
