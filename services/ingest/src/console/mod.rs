//! The operator console at `/console` (README "The operator console",
//! docs/operations.md "Operator console"): server-rendered pages over the same
//! operations as the `contexten` CLI (`contexten-operations`): queues, dead
//! letters (inspect, replay, purge behind a confirmation), a task's page,
//! circuit breakers and rate limiters, and search. Off unless
//! `CONTEXTEN_CONSOLE=1`; admin-scope API tokens sign in.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `CONTEXTEN_CONSOLE` | serve the console at `/console` | `0` |
//! | `CONTEXTEN_CONSOLE_PUBLIC_URL` | the console's public base URL; `https://` marks the session cookie `Secure` | unset |
//! | `CONTEXTEN_CONSOLE_SESSION_TTL_SECS` | how long a sign-in lasts (60–86400) | `3600` |
//! | `CONTEXTEN_TRACE_URL` | trace UI link on a task's page; `{task_id}` and `{correlation_id}` are replaced | unset |

pub mod html;
pub mod pages;
pub mod session;

use crate::AppState;
use axum::Router;
use axum::routing::{get, post};
use contexten_broker::BrokerError;
use contexten_config::{ConfigError, Env};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The console's settings.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// `CONTEXTEN_CONSOLE`, default off.
    pub enabled: bool,
    /// `CONTEXTEN_CONSOLE_PUBLIC_URL`.
    pub public_url: Option<url::Url>,
    /// `CONTEXTEN_CONSOLE_SESSION_TTL_SECS`, 60–86400, default 3600.
    pub session_ttl: Duration,
    /// `CONTEXTEN_TRACE_URL`.
    pub trace_url: Option<String>,
}

impl ConsoleSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = |var: &str| -> Result<Option<url::Url>, ConfigError> {
            match env.raw(var).map(str::trim).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(raw) => match url::Url::parse(raw) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Some(u)),
                    _ => Err(ConfigError {
                        var: var.into(),
                        shown: raw.to_owned(),
                        expected: "an http:// or https:// URL".into(),
                    }),
                },
            }
        };
        let trace_url = url("CONTEXTEN_TRACE_URL")?.map(|_| {
            env.raw("CONTEXTEN_TRACE_URL")
                .unwrap_or_default()
                .trim()
                .to_owned()
        });
        Ok(ConsoleSettings {
            enabled: env.flag("CONTEXTEN_CONSOLE", false)?,
            public_url: url("CONTEXTEN_CONSOLE_PUBLIC_URL")?,
            session_ttl: Duration::from_secs(env.ranged(
                "CONTEXTEN_CONSOLE_SESSION_TTL_SECS",
                3600,
                60,
                86_400,
            )?),
            trace_url,
        })
    }
}

/// What the console keeps between requests: its own broker connection (opened
/// on first use, reopened after it drops) and the last depth seen per queue,
/// from which the queues page derives a depth change per second.
#[derive(Default)]
pub struct Console {
    connection: tokio::sync::Mutex<Option<lapin::Connection>>,
    samples: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Console {
    /// A fresh channel on the console's connection, closed when dropped. One
    /// per request: a dead-letter walk nacks what it held in one go
    /// (`multiple`), which must not reach another request's messages.
    pub async fn channel(&self, state: &AppState) -> Result<ConsoleChannel, BrokerError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.status().connected()
            && let Ok(channel) = connection.create_channel().await
        {
            return Ok(ConsoleChannel(channel));
        }
        if let Some(old) = slot.take() {
            let _ = old.close(200, "reconnecting".into()).await;
        }
        let connection = contexten_broker::connect(&state.cfg.broker, "ingest-console").await?;
        let channel = connection.create_channel().await?;
        *slot = Some(connection);
        Ok(ConsoleChannel(channel))
    }

    /// The net depth change per second of `queue` since the previous sample
    /// (`None` on the first).
    pub fn rate(&self, queue: &str, ready: u32) -> Option<f64> {
        let now = Instant::now();
        let mut samples = self.samples.lock().ok()?;
        let previous = samples.insert(queue.to_owned(), (now, ready));
        let (at, before) = previous?;
        let secs = now.duration_since(at).as_secs_f64();
        (secs >= 0.5).then(|| (f64::from(ready) - f64::from(before)) / secs)
    }
}

/// A channel of one console request; closed (in the background) when dropped,
/// since a dropped lapin channel stays open on the connection.
pub struct ConsoleChannel(lapin::Channel);

impl std::ops::Deref for ConsoleChannel {
    type Target = lapin::Channel;
    fn deref(&self) -> &lapin::Channel {
        &self.0
    }
}

impl Drop for ConsoleChannel {
    fn drop(&mut self) {
        let channel = self.0.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = channel.close(200, "done".into()).await;
            });
        }
    }
}

/// The console's routes (mounted only when `CONTEXTEN_CONSOLE=1`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(pages::home))
        .route("/console/", get(pages::home))
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route("/console/queues", get(pages::queues))
        .route("/console/dead", get(pages::dead))
        .route("/console/dead/confirm", get(pages::confirm))
        .route("/console/dead/act", post(pages::act))
        .route("/console/dead/{stage}/{message_id}", get(pages::letter))
        .route("/console/tasks/{id}", get(pages::task))
        .route("/console/search", get(pages::search))
        .route("/console/limits", get(pages::limits))
}
