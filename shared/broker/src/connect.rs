//! Connecting to RabbitMQ, with backoff until the broker answers or shutdown.

use crate::BrokerError;
use backon::{BackoffBuilder, ExponentialBuilder};
use contexten_config::{BrokerSettings, ExposeSecret};
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Opens one connection named after `service` (shown in the management UI).
pub async fn connect(settings: &BrokerSettings, service: &str) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("{service}-{}", std::process::id()).into());
    Ok(Connection::connect(settings.amqp_url.expose_secret(), properties).await?)
}

/// Connects, retrying with exponential backoff and jitter; `None` on shutdown.
pub(crate) async fn connect_with_backoff(
    settings: &BrokerSettings,
    service: &str,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let mut delays = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match connect(settings, service).await {
            Ok(connection) => return Some(connection),
            Err(error) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "broker unreachable");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
