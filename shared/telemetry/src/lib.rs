//! Telemetry for every binary (docs/design.md §8): one [`init`] that installs JSON logs
//! (task and correlation ids on every line through the handler span), W3C trace
//! context propagation with an OpenTelemetry tracer (OTLP/HTTP export only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set), and the Prometheus recorder behind
//! `/metrics`; [`health`] serves `/healthz`, `/readyz` and `/metrics`.

pub mod health;
pub mod metric;
pub mod propagation;

use contexten_config::{LogFormat, TelemetrySettings};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithHttpConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid RUST_LOG filter: {0}")]
    Filter(String),
    #[error("could not build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("a global subscriber is already installed")]
    AlreadyInstalled,
}

/// Flushes pending spans when dropped (keep it alive for the life of `main`).
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs logs, tracing and metrics for a binary.
pub fn init(settings: &TelemetrySettings) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&settings.log_filter)
        .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let provider = tracer_provider(settings)?;
    let tracer = provider.tracer(settings.service_name.clone());
    let fmt_layer = match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    install_metrics();
    Ok(TelemetryGuard { provider })
}

/// Telemetry for tests: quiet unless `TEST_LOG` is set, idempotent, and with the
/// same trace propagation and metrics as production so tests can assert on them.
pub fn init_for_tests() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let fmt_layer = std::env::var_os("TEST_LOG").map(|_| {
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .compact()
                .with_filter(EnvFilter::new(
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
                ))
        });
        let _ = tracing_subscriber::registry()
            .with(fmt_layer)
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .try_init();
        // Keep the provider alive for the whole test binary.
        std::mem::forget(provider);
        install_metrics();
    });
}

fn tracer_provider(settings: &TelemetrySettings) -> Result<SdkTracerProvider, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if settings.otlp_endpoint.is_some() {
        // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT itself and appends /v1/traces.
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
        if let Some(client) = otlp_client_with_extra_roots()? {
            exporter = exporter.with_http_client(client);
        }
        let exporter = exporter
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// The exporter's HTTP client when `CONTEXTEN_CA_FILE` adds roots (else the
/// exporter builds its own): blocking, built on a thread of its own because
/// its inner runtime must not start inside the caller's.
fn otlp_client_with_extra_roots() -> Result<Option<reqwest::blocking::Client>, TelemetryError> {
    let tls = contexten_tls::global().map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    if !tls.has_extra_roots() {
        return Ok(None);
    }
    let builder = tls.http_blocking(reqwest::blocking::Client::builder().timeout(OTLP_TIMEOUT));
    std::thread::spawn(move || builder.build())
        .join()
        .map_err(|_| TelemetryError::Exporter("building the OTLP HTTP client panicked".into()))?
        .map(Some)
        .map_err(|e| TelemetryError::Exporter(e.to_string()))
}

/// The exporter's own default timeout per export.
const OTLP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Installs the process-wide Prometheus recorder once.
fn install_metrics() {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 300.0,
                ],
            )
            .expect("static bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // A recorder installed earlier (another init in the same process) keeps working.
        let _ = metrics::set_global_recorder(recorder);
        metric::describe_all();
        handle
    });
}

/// The Prometheus text exposition of every metric of this process.
pub fn render_metrics() -> String {
    match PROMETHEUS.get() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_config::Env;
    use contexten_testkit::{TestCerts, free_port};

    /// With CONTEXTEN_CA_FILE, the exporter's client trusts a collector whose
    /// certificate that CA issued (an `openssl s_server` on loopback here).
    #[test]
    fn the_otlp_client_trusts_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let certs = TestCerts::generate(dir.path()).unwrap();
        let ca = certs.ca.to_str().unwrap();
        contexten_tls::init(&Env::from_pairs([("CONTEXTEN_CA_FILE", ca)])).unwrap();
        let client = otlp_client_with_extra_roots()
            .unwrap()
            .expect("a client of its own");
        let port = free_port();
        let mut server = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(port.to_string())
            .arg("-cert")
            .arg(&certs.server_cert)
            .arg("-key")
            .arg(&certs.server_key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let url = format!("https://127.0.0.1:{port}/");
        let mut answer = Err(String::new());
        for _ in 0..100 {
            answer = client
                .get(&url)
                .send()
                .map(|r| r.status())
                .map_err(|e| format!("{e:?}"));
            if answer.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = server.kill();
        let _ = server.wait();
        assert!(answer.is_ok(), "{answer:?}");
    }
}
