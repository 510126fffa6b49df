//! Connecting to RabbitMQ, with backoff until the broker answers or shutdown.

use crate::BrokerError;
use backon::{BackoffBuilder, ExponentialBuilder};
use contexten_config::{BrokerSettings, ExposeSecret};
use contexten_tls::TlsSettings;
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Opens one connection named after `service` (shown in the management UI),
/// over TLS for an `amqps://` URL with the process's TLS settings
/// (`CONTEXTEN_CA_FILE`, the client certificate: crate `contexten-tls`).
pub async fn connect(settings: &BrokerSettings, service: &str) -> Result<Connection, BrokerError> {
    connect_with_tls(settings, service, contexten_tls::global()?).await
}

/// [`connect`] with explicit TLS settings. A failure names the broker's
/// `host:port` (a wrong CA otherwise reads as a bare "invalid peer
/// certificate"), never the URL's credentials.
pub async fn connect_with_tls(
    settings: &BrokerSettings,
    service: &str,
    tls: &TlsSettings,
) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("{service}-{}", std::process::id()).into());
    let url = settings.amqp_url.expose_secret();
    let failed = |source| BrokerError::Connect {
        endpoint: contexten_tls::endpoint(url),
        source,
    };
    let runtime = lapin::runtime::default_runtime().map_err(failed)?;
    Connection::connect_with_config(url, properties, tls.amqp(), runtime)
        .await
        .map_err(failed)
}

/// The longest pause between two connection attempts, before jitter (which
/// adds up to as much again). Short, because every delivery of the stage waits
/// for this reconnect: with 10 s a consumer came back up to 20 s after its
/// broker (`make chaos`); one attempt a second or two per process is nothing
/// to a broker that is coming back.
pub(crate) const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);

/// The pauses between connection attempts: from 100 ms, doubling, with jitter.
fn reconnect_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(RECONNECT_MAX_DELAY)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Connects, retrying with exponential backoff and jitter; `None` on shutdown.
pub(crate) async fn connect_with_backoff(
    settings: &BrokerSettings,
    service: &str,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let mut delays = reconnect_delays();
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match connect(settings, service).await {
            Ok(connection) => return Some(connection),
            Err(error) => {
                let delay = delays.next().unwrap_or(RECONNECT_MAX_DELAY);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "broker unreachable");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_retries_its_broker_at_least_every_two_seconds() {
        let delays: Vec<Duration> = reconnect_delays().take(50).collect();
        assert_eq!(delays.len(), 50, "the backoff never gives up");
        assert!(delays[0] <= Duration::from_millis(200), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= 2 * RECONNECT_MAX_DELAY),
            "{delays:?}"
        );
    }
}
