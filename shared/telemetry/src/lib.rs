//! Telemetry for every binary (docs/design.md §8): one [`init`] that installs JSON logs
//! (task and correlation ids on every line through the handler span), W3C trace
//! context propagation with an OpenTelemetry tracer (OTLP/HTTP export only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set), and the Prometheus recorder behind
//! `/metrics`; [`health`] serves `/healthz`, `/readyz` and `/metrics`.

pub mod client;
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
use std::sync::{Arc, OnceLock};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
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
        LogFormat::Json => json_layer(std::io::stdout).boxed(),
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

/// The JSON line of the inner formatter with the current span's W3C `trace_id`
/// and `span_id`, and the `task_id` and `correlation_id` of the nearest span
/// that names them, at the top level, so a log line joins its trace and task
/// even inside a client span (docs/design.md §8).
struct TraceJoined<F> {
    inner: F,
    dispatch: DispatchSlot,
}

/// The subscriber this layer is part of: the formatter runs while the event is
/// dispatched, when `Span::current()` sees no subscriber, so it asks the
/// OpenTelemetry layer through this handle instead.
#[derive(Clone, Default)]
struct DispatchSlot(Arc<OnceLock<tracing::dispatcher::WeakDispatch>>);

impl<S: tracing::Subscriber> Layer<S> for DispatchSlot {
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

/// JSON lines joined to their trace and task (see [`TraceJoined`]) on `writer`.
fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let dispatch = DispatchSlot::default();
    tracing_subscriber::fmt::layer()
        .json()
        .event_format(TraceJoined {
            inner: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
            dispatch: dispatch.clone(),
        })
        .with_writer(writer)
        .and_then(dispatch)
}

/// Span fields lifted to the top level of a JSON line.
const JOINED_FIELDS: [&str; 2] = ["task_id", "correlation_id"];

impl<S, N, F> FormatEvent<S, N> for TraceJoined<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.lookup_current().and_then(|span| {
            let dispatch = self.dispatch.0.get()?.upgrade()?;
            ids_of(&tracing_opentelemetry::get_otel_context(
                &span.id(),
                &dispatch,
            )?)
        });
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str(&line) else {
            return writer.write_str(&line);
        };
        if let Some((trace_id, span_id)) = ids {
            fields.insert("trace_id".into(), trace_id.into());
            fields.insert("span_id".into(), span_id.into());
        }
        for span in ctx.event_scope().into_iter().flatten() {
            let extensions = span.extensions();
            let Some(recorded) = extensions.get::<FormattedFields<N>>() else {
                continue;
            };
            let Ok(serde_json::Value::Object(span_fields)) =
                serde_json::from_str::<serde_json::Value>(recorded.as_str())
            else {
                continue;
            };
            for key in JOINED_FIELDS {
                if let (false, Some(value)) = (fields.contains_key(key), span_fields.get(key)) {
                    fields.insert(key.into(), value.clone());
                }
            }
        }
        let joined = serde_json::to_string(&fields).map_err(|_| std::fmt::Error)?;
        writer.write_str(&joined)?;
        writer.write_char('\n')
    }
}

/// The W3C hex trace and span ids of the current span, when it has a valid context.
pub fn current_trace_ids() -> Option<(String, String)> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let current = tracing::Span::current();
    if current.is_none() {
        return None;
    }
    ids_of(&current.context())
}

fn ids_of(cx: &opentelemetry::Context) -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt as _;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
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
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A line written inside a child span carries that span's ids and the
    /// task and correlation ids of its parent, at the top level.
    #[test]
    fn a_json_line_carries_trace_span_task_and_correlation_ids() {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let lines = Lines::default();
        let writer = lines.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(json_layer(move || writer.clone()))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            let task = tracing::info_span!("process", task_id = "t-1", correlation_id = "c-1");
            let _task = task.enter();
            let client = tracing::info_span!("client");
            let _client = client.enter();
            tracing::info!(answer = 42, "called");
            let ids = current_trace_ids().expect("a valid span context");
            use opentelemetry::trace::TraceContextExt as _;
            assert_eq!(
                task.context().span().span_context().trace_id().to_string(),
                ids.0
            );
            ids
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["trace_id"], trace_id.as_str(), "{text}");
        assert_eq!(line["span_id"], span_id.as_str());
        assert_eq!(trace_id.len(), 32);
        assert_eq!(span_id.len(), 16);
        assert_eq!(line["task_id"], "t-1");
        assert_eq!(line["correlation_id"], "c-1");
        assert_eq!(line["answer"], 42);
        assert_eq!(line["message"], "called");
    }

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
