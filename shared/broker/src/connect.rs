//! Connecting to RabbitMQ, with backoff until the broker answers or shutdown.
//! With several cluster nodes (`AMQP_ADDRESSES`, or several hosts in
//! `AMQP_URL`) each attempt tries them in turn, starting after the node the
//! previous attempt reached, so a process that lost its node moves to another
//! (docs/operations.md "Running on a cluster").

use crate::BrokerError;
use backon::{BackoffBuilder, ExponentialBuilder};
use contexten_config::{BrokerSettings, ExposeSecret};
use contexten_tls::TlsSettings;
use lapin::{Connection, ConnectionProperties};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest one connection attempt to one node may take: a node that
/// accepts TCP but never answers (paused, partitioned) must not hold the
/// rotation up.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the next connection starts in the address list: one past the node
/// the last connection reached, so losing a node moves the process on.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The URLs to try, in order: `settings.amqp_url` with its host and port
/// replaced by each of `settings.amqp_addresses`, starting at `start`; the URL
/// alone when no addresses are listed.
fn candidate_urls(settings: &BrokerSettings, start: usize) -> Vec<String> {
    let url = settings.amqp_url.expose_secret();
    let addresses = &settings.amqp_addresses;
    if addresses.is_empty() {
        return vec![url.to_owned()];
    }
    (0..addresses.len())
        .map(|i| with_address(url, &addresses[(start + i) % addresses.len()]))
        .collect()
}

/// `url` with its `host:port` replaced by `address` (credentials, vhost and
/// query kept).
fn with_address(url: &str, address: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}{address}{tail}")
}

/// Opens one connection named after `service` (shown in the management UI),
/// over TLS for an `amqps://` URL with the process's TLS settings
/// (`CONTEXTEN_CA_FILE`, the client certificate: crate `contexten-tls`).
pub async fn connect(settings: &BrokerSettings, service: &str) -> Result<Connection, BrokerError> {
    connect_with_tls(settings, service, contexten_tls::global()?).await
}

/// [`connect`] with explicit TLS settings: tries each cluster node once, in
/// turn, and answers the first connection. A failure names the last broker's
/// `host:port` (a wrong CA otherwise reads as a bare "invalid peer
/// certificate"), never the URL's credentials.
pub async fn connect_with_tls(
    settings: &BrokerSettings,
    service: &str,
    tls: &TlsSettings,
) -> Result<Connection, BrokerError> {
    let start = NEXT.load(Ordering::Relaxed);
    let urls = candidate_urls(settings, start);
    let several = urls.len() > 1;
    let mut last = None;
    for (i, url) in urls.iter().enumerate() {
        match connect_one(url, service, tls).await {
            Ok(connection) => {
                // The next connection (after this one is lost) starts at the next node.
                NEXT.store(start + i + 1, Ordering::Relaxed);
                return Ok(connection);
            }
            Err(error) => {
                if several {
                    tracing::warn!(%error, "broker node unreachable; trying the next one");
                }
                last = Some(error);
            }
        }
    }
    Err(last.expect("at least one broker address"))
}

async fn connect_one(
    url: &str,
    service: &str,
    tls: &TlsSettings,
) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("{service}-{}", std::process::id()).into());
    let failed = |source| BrokerError::Connect {
        endpoint: contexten_tls::endpoint(url),
        source,
    };
    let runtime = lapin::runtime::default_runtime().map_err(failed)?;
    let attempt = Connection::connect_with_config(url, properties, tls.amqp(), runtime);
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
        Ok(connected) => connected.map_err(failed),
        Err(_) => Err(failed(lapin::Error::from(lapin::ErrorKind::IOError(
            std::sync::Arc::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no AMQP handshake within {ATTEMPT_TIMEOUT:?}"),
            )),
        )))),
    }
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
    fn each_attempt_tries_every_node_starting_at_the_next_one() {
        let env = contexten_config::Env::from_pairs([
            ("AMQP_URL", "amqps://u:pw@ignored:5671/prod?heartbeat=10"),
            ("AMQP_ADDRESSES", "r0:5671,r1:5671,r2:5671"),
        ]);
        let settings = BrokerSettings::from_env(&env, 1).unwrap();
        assert_eq!(
            candidate_urls(&settings, 4),
            [
                "amqps://u:pw@r1:5671/prod?heartbeat=10",
                "amqps://u:pw@r2:5671/prod?heartbeat=10",
                "amqps://u:pw@r0:5671/prod?heartbeat=10",
            ]
        );
        let single = BrokerSettings::from_env(&contexten_config::Env::from_pairs([]), 1).unwrap();
        assert_eq!(
            candidate_urls(&single, 7),
            [single.amqp_url.expose_secret().to_owned()]
        );
    }

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
