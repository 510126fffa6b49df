//! The HTTP server under ingest's router, with its resources bounded (README,
//! "How ingest bounds its resources"):
//!
//! - at most `INGEST_MAX_CONNECTIONS` open connections (more wait in the
//!   kernel's accept queue) and request headers within `INGEST_HEADER_TIMEOUT_SECS`
//!   (hyper's header timer, which `axum::serve` leaves off; it also runs on an
//!   idle keep-alive connection);
//! - at most `INGEST_MAX_CONCURRENT_REQUESTS` requests in handlers at once, and
//!   their bodies within `INGEST_BODY_MEMORY_BYTES` (each reserves twice its
//!   `Content-Length`, or twice the body limit when it announces none): the next one
//!   is answered `503 overloaded` with `Retry-After` without reading its body
//!   ([`shed_over_capacity`]);
//! - every request, body included, within `INGEST_REQUEST_TIMEOUT_SECS`
//!   (tower-http's timeout in [`crate::router`]).
//!
//! Memory held by request bodies therefore stays within `INGEST_BODY_MEMORY_BYTES`
//! however many clients send and however slowly.

use crate::error::IngestError;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Resident bytes a body costs per byte of its length while it is received.
const BODY_COST_FACTOR: u32 = 2;

/// How long shutdown waits for open requests to finish.
const DRAIN: Duration = Duration::from_secs(20);

/// The bounds of [`serve_bounded`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

impl From<&crate::config::Limits> for ConnectionLimits {
    fn from(limits: &crate::config::Limits) -> Self {
        ConnectionLimits {
            max_connections: limits.max_connections,
            header_timeout: limits.header_timeout,
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting and waits
/// (at most 20 s) for open connections to finish their requests.
pub async fn serve_bounded(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let tcp = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Answers are small and latency-bound; Nagle would hold them back
        // until the peer's delayed ACK.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("stopping with requests still open");
    }
}

/// What [`shed_over_capacity`] hands out: request slots, and the body memory
/// budget in KiB units.
#[derive(Clone)]
pub struct RequestSlots {
    slots: Arc<Semaphore>,
    body_kib: Arc<Semaphore>,
    max_body_kib: u32,
    retry_after: Duration,
}

impl RequestSlots {
    pub fn new(limits: &crate::config::Limits) -> Self {
        RequestSlots {
            slots: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            body_kib: Arc::new(Semaphore::new(kib(limits.body_memory_bytes as u64) as usize)),
            max_body_kib: kib(limits.max_body_bytes as u64),
            retry_after: limits.retry_after,
        }
    }

    /// The budget a request's body reserves: twice its `Content-Length` (capped
    /// at the body limit, which rejects more anyway) or, when the length is not
    /// announced, twice the body limit. Twice, because a body arrives as frames
    /// in hyper's read buffers and is copied into one buffer at the end:
    /// `cargo bench -p ingest --bench slow_uploads` measured about 2 MiB of
    /// resident memory per 1 MiB body in flight.
    fn body_reservation(&self, request: &Request) -> u32 {
        let kib = request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map_or(self.max_body_kib, |len| kib(len).min(self.max_body_kib));
        kib.saturating_mul(BODY_COST_FACTOR)
    }
}

/// `bytes` in whole KiB, the unit of the body memory budget's permits.
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Middleware: runs the request in a free slot with its body's memory reserved,
/// or answers `503 overloaded` at once without reading the body. Shedding beats
/// queueing here: senders retry a 503, and a queue in front of a saturated
/// replica only adds latency and memory.
pub async fn shed_over_capacity(
    State(slots): State<RequestSlots>,
    request: Request,
    next: Next,
) -> Response {
    let reservation = slots.body_reservation(&request);
    let admitted = slots.slots.clone().try_acquire_owned().and_then(|slot| {
        let memory = slots.body_kib.clone().try_acquire_many_owned(reservation)?;
        Ok((slot, memory))
    });
    match admitted {
        Ok(held) => {
            let response = next.run(request).await;
            drop(held);
            response
        }
        Err(_) => {
            contexten_telemetry::metric::ingest_rejected("http", "overloaded");
            IngestError::Overloaded {
                retry_after: slots.retry_after,
            }
            .into_response()
        }
    }
}

/// A SERVER span per request (OpenTelemetry HTTP conventions, docs/design.md
/// §8): the parent of every publish the request makes, so the task's trace
/// starts here. A `traceparent` is adopted on the REST API only (`/v1/`):
/// a webhook's headers are the platform's, not a trace of ours.
pub async fn trace_request(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        task_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
    );
    if route.starts_with("/v1/") {
        let headers: std::collections::HashMap<String, String> = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|name| {
                let value = request.headers().get(name)?.to_str().ok()?;
                Some((name.to_owned(), value.to_owned()))
            })
            .collect();
        contexten_telemetry::propagation::adopt_parent(&span, &headers);
    }
    // Until the task names its own, a request's lines are joined by its trace id.
    if let Some((trace_id, _)) = span.in_scope(contexten_telemetry::current_trace_ids) {
        span.record("correlation_id", trace_id);
    }
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}
