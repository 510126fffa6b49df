//! `/healthz` (the process is alive), `/readyz` (its dependencies are usable),
//! `/metrics` (Prometheus text) and `/status` (JSON for an on-call engineer: build,
//! dependencies with round-trip times, breaker states). Components report their
//! own state into a shared [`Readiness`], so the probes themselves never wait on
//! a broker or Redis; only `/status` measures, with a short timeout.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The state of one dependency.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ComponentState {
    pub ready: bool,
    pub detail: String,
    /// Whether `/readyz` fails while this component is not ready. An advisory
    /// component is only reported: ingest keeps serving (503 with `Retry-After`,
    /// failed deliveries recorded) while the broker is down, so taking it out of
    /// the Service then would turn those answers into connection errors.
    pub required: bool,
}

/// Shared readiness of the components a service depends on.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    components: Arc<Mutex<BTreeMap<String, ComponentState>>>,
}

impl Readiness {
    /// A readiness with `components` registered as not ready yet.
    pub fn new(components: &[&str]) -> Self {
        let readiness = Readiness::default();
        for name in components {
            readiness.set(name, false, "starting");
        }
        readiness
    }

    /// A readiness with `required` components (which `/readyz` follows) and
    /// `advisory` ones (only reported), all not ready yet.
    pub fn with_advisory(required: &[&str], advisory: &[&str]) -> Self {
        let readiness = Readiness::new(required);
        if let Ok(mut map) = readiness.components.lock() {
            for name in advisory {
                map.insert(
                    (*name).to_owned(),
                    ComponentState {
                        ready: false,
                        detail: "starting".into(),
                        required: false,
                    },
                );
            }
        }
        readiness
    }

    /// Records the state of `component`; a component not registered before is
    /// required.
    pub fn set(&self, component: &str, ready: bool, detail: impl Into<String>) {
        if let Ok(mut map) = self.components.lock() {
            let required = map.get(component).is_none_or(|c| c.required);
            let state = ComponentState {
                ready,
                detail: detail.into(),
                required,
            };
            map.insert(component.to_owned(), state);
        }
    }

    /// Whether every required component is ready, with each one's state.
    pub fn report(&self) -> (bool, BTreeMap<String, ComponentState>) {
        let map = self
            .components
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        (map.values().filter(|c| c.required).all(|c| c.ready), map)
    }

    /// Whether `component` is ready.
    pub fn is_ready(&self, component: &str) -> bool {
        self.components
            .lock()
            .map(|m| m.get(component).is_some_and(|c| c.ready))
            .unwrap_or(false)
    }
}

#[derive(Serialize)]
struct ReadyBody {
    ready: bool,
    components: BTreeMap<String, ComponentState>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    let (ready, components) = readiness.report();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(ReadyBody { ready, components }))
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::render_metrics(),
    )
}

/// The build a binary runs, as `/status` and `contexten_build_info` report it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BuildInfo {
    pub service: String,
    pub version: &'static str,
    pub git_sha: &'static str,
}

static BUILD: OnceLock<BuildInfo> = OnceLock::new();

/// Records the binary's build (`version` = its `CARGO_PKG_VERSION`) for
/// `/status` and sets `contexten_build_info`. Call once, after telemetry init.
pub fn set_build_info(service: &str, version: &'static str) {
    let info = BUILD.get_or_init(|| BuildInfo {
        service: service.to_owned(),
        version,
        git_sha: crate::metric::GIT_SHA,
    });
    crate::metric::build_info(&info.service, info.version);
}

/// A breaker's last known state, as `/status` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BreakerReport {
    pub state: &'static str,
    /// Milliseconds since this process last saw the state change.
    pub for_ms: u64,
}

static BREAKERS: Mutex<BTreeMap<String, (&'static str, Instant)>> = Mutex::new(BTreeMap::new());

/// Breaker `name` is in `state` (`closed`, `open`, `half_open`): the breakers
/// report here so `/status` lists them.
pub fn report_breaker(name: &str, state: &'static str) {
    let mut map = BREAKERS.lock().unwrap_or_else(|e| e.into_inner());
    match map.get_mut(name) {
        Some(entry) if entry.0 == state => {}
        Some(entry) => *entry = (state, Instant::now()),
        None => {
            map.insert(name.to_owned(), (state, Instant::now()));
        }
    }
}

/// Whether breaker `name` has reported a state in this process.
pub fn breaker_known(name: &str) -> bool {
    BREAKERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(name)
}

fn breakers() -> BTreeMap<String, BreakerReport> {
    BREAKERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(name, (state, since))| {
            let report = BreakerReport {
                state,
                for_ms: since.elapsed().as_millis() as u64,
            };
            (name.clone(), report)
        })
        .collect()
}

/// The last round trip to a dependency, as `/status` reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoundTrip {
    /// `ping` (a probe the service runs anyway) or `tcp_connect` (measured
    /// when `/status` is asked).
    pub probe: &'static str,
    pub ok: bool,
    /// Round-trip time of the probe; for a failed probe, how long it took to fail.
    pub rtt_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How old the measurement is (0 for one made for this request).
    pub age_ms: u64,
}

static ROUND_TRIPS: Mutex<BTreeMap<String, (RoundTrip, Instant)>> = Mutex::new(BTreeMap::new());

/// Records a probe a component ran anyway (the store's Redis pings): `name`
/// (`redis_records`, `redis_cache`), how long it took and whether it worked.
pub fn record_round_trip(name: &str, elapsed: Duration, result: Result<(), String>) {
    let trip = RoundTrip {
        probe: "ping",
        ok: result.is_ok(),
        rtt_ms: millis(elapsed),
        error: result.err(),
        age_ms: 0,
    };
    ROUND_TRIPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_owned(), (trip, Instant::now()));
}

static TCP_PROBES: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// How long `/status` waits for one measured round trip.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Lets `/status` measure the round trip to the broker of `settings` (a TCP
/// connect to its host and port, without credentials, so nothing is logged in).
pub fn probe_broker(settings: &contexten_config::BrokerSettings) {
    use contexten_config::ExposeSecret;
    if let Some(target) = host_port(settings.amqp_url.expose_secret()) {
        TCP_PROBES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert("broker".to_owned(), target);
    }
}

/// `host:port` of an `amqp://` or `amqps://` URL (default ports 5672 and 5671).
fn host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let host = authority.rsplit('@').next()?;
    if host.is_empty() {
        return None;
    }
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    };
    if has_port {
        return Some(host.to_owned());
    }
    let port = if scheme.eq_ignore_ascii_case("amqps") {
        5671
    } else {
        5672
    };
    Some(format!("{host}:{port}"))
}

async fn tcp_round_trip(target: String) -> RoundTrip {
    let started = Instant::now();
    let result = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&target)).await;
    let error = match result {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
    };
    RoundTrip {
        probe: "tcp_connect",
        ok: error.is_none(),
        rtt_ms: millis(started.elapsed()),
        error,
        age_ms: 0,
    }
}

fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 1e6).round() / 1e3
}

async fn round_trips() -> BTreeMap<String, RoundTrip> {
    let mut trips: BTreeMap<String, RoundTrip> = ROUND_TRIPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(name, (trip, at))| {
            let mut trip = trip.clone();
            trip.age_ms = at.elapsed().as_millis() as u64;
            (name.clone(), trip)
        })
        .collect();
    let probes: Vec<(String, String)> = TCP_PROBES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(name, target)| (name.clone(), target.clone()))
        .collect();
    let measured: Vec<_> = probes
        .into_iter()
        .map(|(name, target)| (name, tokio::spawn(tcp_round_trip(target))))
        .collect();
    for (name, handle) in measured {
        if let Ok(trip) = handle.await {
            trips.insert(name, trip);
        }
    }
    trips
}

#[derive(Serialize)]
struct StatusBody {
    build: Option<BuildInfo>,
    ready: bool,
    dependencies: BTreeMap<String, ComponentState>,
    round_trips: BTreeMap<String, RoundTrip>,
    breakers: BTreeMap<String, BreakerReport>,
}

/// Always 200: `/status` describes, `/readyz` decides.
async fn status(State(readiness): State<Readiness>) -> impl IntoResponse {
    let (ready, dependencies) = readiness.report();
    Json(StatusBody {
        build: BUILD.get().cloned(),
        ready,
        dependencies,
        round_trips: round_trips().await,
        breakers: breakers(),
    })
}

/// The health routes, to serve alone or merge into a service's own router.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(readiness)
}

/// Serves the health routes on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn status_of(readiness: &Readiness, path: &str) -> StatusCode {
        router(readiness.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn readyz_follows_every_component() {
        let readiness = Readiness::new(&["broker", "redis"]);
        assert_eq!(status_of(&readiness, "/healthz").await, StatusCode::OK);
        assert_eq!(
            status_of(&readiness, "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set("broker", true, "connected");
        assert_eq!(
            status_of(&readiness, "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set("redis", true, "pong");
        assert_eq!(status_of(&readiness, "/readyz").await, StatusCode::OK);
        assert_eq!(status_of(&readiness, "/metrics").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn an_advisory_component_is_reported_but_does_not_fail_readyz() {
        let readiness = Readiness::with_advisory(&["serving"], &["broker"]);
        readiness.set("serving", true, "listening");
        assert_eq!(status_of(&readiness, "/readyz").await, StatusCode::OK);
        let (ready, components) = readiness.report();
        assert!(ready);
        assert!(!components["broker"].ready && !components["broker"].required);
        readiness.set("broker", true, "connected");
        assert!(readiness.is_ready("broker"));
        assert!(
            !readiness.report().1["broker"].required,
            "set keeps the role"
        );
        readiness.set("serving", false, "shutting down");
        assert_eq!(
            status_of(&readiness, "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn host_port_reads_amqp_urls_without_credentials() {
        assert_eq!(
            host_port("amqp://guest:secret@rabbit:5673/%2f").as_deref(),
            Some("rabbit:5673")
        );
        assert_eq!(
            host_port("amqps://u:p@broker.example/vhost").as_deref(),
            Some("broker.example:5671")
        );
        assert_eq!(host_port("amqp://[::1]/").as_deref(), Some("[::1]:5672"));
        assert_eq!(
            host_port("amqp://[::1]:5999").as_deref(),
            Some("[::1]:5999")
        );
        assert_eq!(host_port("not a url"), None);
        assert_eq!(host_port("amqp:///vhost"), None);
    }

    #[tokio::test]
    async fn status_reports_build_dependencies_round_trips_and_breakers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = contexten_config::BrokerSettings::from_env(
            &contexten_config::Env::from_pairs([(
                "AMQP_URL",
                format!("amqp://guest:guest@{addr}/%2f").as_str(),
            )]),
            1,
        )
        .unwrap();
        probe_broker(&settings);
        crate::init_for_tests();
        set_build_info("status-test", "9.9.9");
        report_breaker("status_test_llm", "closed");
        report_breaker("status_test_llm", "open");
        record_round_trip("redis_records", Duration::from_micros(1500), Ok(()));
        let readiness = Readiness::new(&["broker", "redis"]);
        readiness.set("broker", true, "connected");
        let response = router(readiness)
            .oneshot(Request::get("/status").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "status never fails");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["build"]["service"], "status-test");
        assert_eq!(status["build"]["version"], "9.9.9");
        assert_eq!(status["ready"], false);
        assert_eq!(status["dependencies"]["broker"]["ready"], true);
        assert_eq!(status["dependencies"]["redis"]["ready"], false);
        assert_eq!(status["round_trips"]["redis_records"]["rtt_ms"], 1.5);
        assert_eq!(status["round_trips"]["redis_records"]["probe"], "ping");
        assert_eq!(status["round_trips"]["broker"]["probe"], "tcp_connect");
        assert_eq!(status["round_trips"]["broker"]["ok"], true, "{status}");
        assert_eq!(status["breakers"]["status_test_llm"]["state"], "open");
        let metrics = crate::render_metrics();
        assert!(
            metrics.contains("contexten_build_info{service=\"status-test\",version=\"9.9.9\""),
            "{metrics}"
        );
        drop(listener);
    }
}
