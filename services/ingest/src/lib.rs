//! ingest: the fleet's front door (docs/design.md §1, §5, §7).
//!
//! - [`webhooks`]: `POST /webhooks/{name}` for every source in
//!   [`sources::registry`] (GitHub, Linear, Slack, GitLab); the raw body is kept
//!   and its signature ([`verify`]) checked before parsing; the source decides
//!   what becomes a task, one generic path admits it.
//! - [`api`]: `POST /v1/tasks`, `GET /v1/tasks/{id}`, `/v1/openapi.json`, with
//!   hashed bearer tokens ([`tokens`]).
//! - [`routing`]: strategy and priority (commands, labels, TOML rules).
//! - [`intake`]: dedup (`SET NX EX`), status record, conversation, and the two
//!   confirmed publishes (task to its first stage, acknowledgement to dispatch)
//!   that happen before any 2xx.
//! - [`failed`] and [`redeliver`]: GitHub deliveries refused while the broker was
//!   down, and the command that asks GitHub to redeliver them.
//!
//! It keeps a confirmed [`Publisher`] in a [`SharedPublisher`] slot (empty while
//! the broker is down: requests get 503 with `Retry-After`) and serves `/healthz`,
//! `/readyz` and `/metrics` on the same `INGEST_ADDR`.

pub mod admission;
pub mod api;
pub mod config;
pub mod console;
pub mod error;
pub mod failed;
pub mod gate;
pub mod hints;
pub mod intake;
pub mod redeliver;
pub mod replay;
pub mod routing;
pub mod server;
pub mod sources;
pub mod tokens;
pub mod verify;
pub mod webhooks;

pub use config::{IngestConfig, StartError};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use contexten_broker::{BrokerError, CancellationToken, Publisher, Store, connect, topology};
use contexten_envelope::Names;
use contexten_telemetry::health::{self, Readiness};
use contexten_trust::policy::{PolicyError, PolicyStore};
use std::sync::Arc;
use std::time::Duration;
use tokens::TokenStore;
use tokio::net::TcpListener;
use tokio::sync::RwLock;
use tokio_util::task::TaskTracker;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// The publisher of the current broker session, absent while reconnecting.
pub type SharedPublisher = Arc<RwLock<Option<Publisher>>>;

/// Everything a request handler needs.
pub struct AppState {
    pub cfg: IngestConfig,
    pub names: Names,
    pub store: Store,
    pub publisher: SharedPublisher,
    pub tokens: TokenStore,
    /// `CONTEXTEN_POLICY_FILE`, reloaded on change.
    pub policy: PolicyStore,
    pub scripts: intake::Scripts,
    pub retry_after: Duration,
    pub dedup_ttl: Duration,
    pub conversation_ttl: Duration,
    /// Acknowledgement publishes still waiting for their confirm; shutdown
    /// waits for them (see [`intake`]).
    pub background: TaskTracker,
    /// The webhook sources served, one route each ([`sources::registry`]).
    pub sources: Vec<Arc<dyn sources::WebhookSource>>,
    /// The operator console's broker connection and samples ([`console`]).
    pub console: console::Console,
}

impl AppState {
    /// Builds the state (no I/O besides reading the token file).
    pub fn new(
        cfg: IngestConfig,
        tokens: TokenStore,
        policy: PolicyStore,
    ) -> Result<Self, BrokerError> {
        let names = Names::new(cfg.broker.prefix.clone());
        let store = Store::new(&cfg.redis, names.clone())?;
        Ok(AppState {
            names,
            store,
            publisher: Arc::default(),
            tokens,
            policy,
            scripts: intake::Scripts::default(),
            retry_after: cfg.limits.retry_after,
            dedup_ttl: cfg.limits.dedup_ttl,
            conversation_ttl: cfg.limits.conversation_ttl,
            background: TaskTracker::new(),
            sources: sources::registry(),
            console: console::Console::default(),
            cfg,
        })
    }

    /// Whether a conversation has had a task (a Slack thread the bot answers).
    pub async fn conversation_known(&self, conversation: &str) -> Result<bool, BrokerError> {
        let key = intake::conversation_key(&self.names, conversation);
        let (exists,): (bool,) = self
            .store
            .run(|| {
                let mut p = redis::pipe();
                p.exists(&key);
                p
            })
            .await?;
        Ok(exists)
    }
}

/// Why ingest stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("API tokens: {0}")]
    Tokens(#[from] tokens::TokensError),
    #[error("CONTEXTEN_POLICY_FILE: {0}")]
    Policy(#[from] PolicyError),
}

/// Every route of ingest, health included. Requests other than the probes run
/// within the request timeout and the concurrency cap ([`server`]).
pub fn router(state: Arc<AppState>, readiness: Readiness) -> Router {
    let limits = state.cfg.limits.clone();
    let body_limit = limits.max_body_bytes;
    let timeout = limits.request_timeout;
    let long_poll = Router::new()
        .route("/v1/tasks/{id}", get(api::get_task))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout + Duration::from_secs(api::MAX_WAIT_SECS),
        ));
    let slots = server::RequestSlots::new(&limits);
    let mut routes = webhooks::routes(&state.sources);
    if state.cfg.console.enabled {
        routes = routes.merge(console::routes());
    }
    let app = routes
        .route("/v1/tasks", post(api::create_task))
        .route("/v1/openapi.json", get(api::openapi))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .merge(long_poll)
        .fallback(not_found)
        .with_state(state)
        // tower-http answers 413 itself when Content-Length is over the limit;
        // a streamed body over the limit fails extraction (also 413, as JSON).
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            slots,
            server::shed_over_capacity,
        ))
        .layer(axum::middleware::map_response(
            move |r: Response| async move { json_4xx(r, body_limit, timeout) },
        ))
        .layer(axum::middleware::from_fn(server::trace_request));
    app.merge(health::router(readiness))
}

async fn not_found() -> Response {
    error::IngestError::NotFound("no such route".into()).into_response()
}

/// Gives the framework's bare 4xx answers (tower-http's 413, axum's 405) the
/// JSON body every 4xx has.
fn json_4xx(response: Response, limit: usize, timeout: Duration) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    match response.status() {
        _ if is_json => response,
        StatusCode::PAYLOAD_TOO_LARGE => error::IngestError::TooLarge(limit).into_response(),
        StatusCode::REQUEST_TIMEOUT => {
            contexten_telemetry::metric::ingest_rejected("http", "request_timeout");
            error::IngestError::RequestTimeout(timeout).into_response()
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            let (mut parts, _) = response.into_parts();
            let body = serde_json::json!({
                "error": "method_not_allowed",
                "message": "this route does not accept that method",
            });
            parts.headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            Response::from_parts(parts, axum::body::Body::from(body.to_string()))
        }
        _ => response,
    }
}

/// How long shutdown waits for acknowledgements still being confirmed.
const ACK_DRAIN: Duration = Duration::from_secs(5);

/// Serves ingest on `listener` until `shutdown`.
pub async fn serve(
    cfg: IngestConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().unwrap_or(cfg.addr);
    cfg.log_providers();
    let tokens = TokenStore::load(cfg.api_tokens_file.clone(), cfg.api_tokens_inline.clone())?;
    let policy = PolicyStore::load(cfg.policy_file.clone())?;
    let state = Arc::new(AppState::new(cfg, tokens, policy)?);
    let readiness = ingest_readiness();
    // The broker session outlives the listener: requests still in flight and
    // acknowledgements still unconfirmed finish before the connection closes.
    let broker_stop = CancellationToken::new();
    start_background(&state, &readiness, &shutdown, &broker_stop);
    tracing::info!(%addr, "ingest listening");
    let limits = server::ConnectionLimits::from(&state.cfg.limits);
    readiness.set(SERVING, true, "listening");
    let draining = readiness.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        draining.set(SERVING, false, "shutting down");
    });
    server::serve_bounded(listener, router(state.clone(), readiness), limits, shutdown).await;
    state.background.close();
    if tokio::time::timeout(ACK_DRAIN, state.background.wait())
        .await
        .is_err()
    {
        tracing::warn!("stopping with acknowledgements still unconfirmed");
    }
    broker_stop.cancel();
    Ok(())
}

/// The one component `/readyz` follows: whether this process is accepting
/// requests.
pub const SERVING: &str = "serving";

/// Ingest's readiness: ready while it serves, whatever the broker and Redis do.
/// Answering `503` with `Retry-After` and recording the refused GitHub delivery
/// (in Redis, or in a file when Redis is down too) is the correct answer while
/// they are down; a pod out of the Service would leave senders with connection
/// errors instead. Both are still reported in `/readyz`'s body.
pub fn ingest_readiness() -> Readiness {
    Readiness::with_advisory(&[SERVING], &["broker", "redis"])
}

/// Starts the Redis health watch and the token reloader (until `shutdown`) and
/// the broker session keeper (until `broker_stop`).
pub fn start_background(
    state: &Arc<AppState>,
    readiness: &Readiness,
    shutdown: &CancellationToken,
    broker_stop: &CancellationToken,
) {
    tokio::spawn(
        state
            .store
            .clone()
            .watch_health(readiness.clone(), shutdown.clone()),
    );
    tokio::spawn(state.tokens.clone().watch(shutdown.clone()));
    let stop = shutdown.clone();
    tokio::spawn(
        state
            .policy
            .clone()
            .watch(async move { stop.cancelled().await }),
    );
    tokio::spawn(keep_publisher(
        state.cfg.clone(),
        state.names.clone(),
        state.store.clone(),
        state.publisher.clone(),
        readiness.clone(),
        broker_stop.clone(),
    ));
}

/// Publishing channels ingest uses in turn. Since a webhook's task and
/// acknowledgement leave together on one channel, one channel does best: at a
/// fixed 3,300 webhooks/s, 12 alternating rounds each of
/// `BENCH_HALF_RATE=3300 cargo bench -p ingest --bench ingest_load` gave a
/// median p50 of 2.9 ms and p99 of 14.8 ms with one channel against 4.4 ms and
/// 21.6 ms with four (RabbitMQ wakes one channel process instead of four and
/// used about 0.15 of a core less), and saturation did not drop. (When the two
/// messages were published apart, four channels had the lower p99.)
pub const PUBLISH_CHANNELS: usize = 1;

/// Keeps one broker connection with the topology declared and a publisher open,
/// reconnecting with backoff when it drops.
async fn keep_publisher(
    cfg: IngestConfig,
    names: Names,
    store: Store,
    slot: SharedPublisher,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut first = true;
    while !shutdown.is_cancelled() {
        let session = async {
            let connection = connect(&cfg.broker, "ingest").await?;
            let channel = connection.create_channel().await?;
            topology::declare_for(&connection, &names, &cfg.broker).await?;
            let publisher = Publisher::with_channels(
                &connection,
                names.clone(),
                Some(store.clone()),
                cfg.broker.payload_inline_limit,
                PUBLISH_CHANNELS,
            )
            .await?
            .with_confirm_timeout(cfg.broker.publish_confirm_timeout);
            Ok::<_, BrokerError>((connection, channel, publisher))
        };
        match session.await {
            Ok((connection, channel, publisher)) => {
                if !first {
                    contexten_telemetry::metric::broker_reconnected("ingest");
                }
                first = false;
                *slot.write().await = Some(publisher.clone());
                readiness.set("broker", true, "connected");
                // The declare channel stays open only to notice the connection dropping.
                while connection.status().connected()
                    && channel.status().connected()
                    && publisher.is_connected()
                {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                *slot.write().await = None;
                readiness.set("broker", false, "reconnecting");
                let _ = connection.close(200, "bye".into()).await;
            }
            Err(error) => {
                readiness.set("broker", false, error.to_string());
                tracing::warn!(%error, "broker unreachable");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}
