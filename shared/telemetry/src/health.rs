//! `/healthz` (the process is alive), `/readyz` (its dependencies are usable) and
//! `/metrics` (Prometheus text). Components report their own state into a shared
//! [`Readiness`], so the probe itself never waits on a broker or Redis.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
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

/// The health routes, to serve alone or merge into a service's own router.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
}
