//! TLS for every connection the fleet makes (README "TLS").
//!
//! - One crypto provider for the whole tree and process: ring
//!   ([`install_crypto_provider`]). reqwest is built with `rustls-no-provider`
//!   and panics on a client built before a provider is installed, so every
//!   builder here installs it first.
//! - [`TlsSettings`]: `CONTEXTEN_CA_FILE`, a PEM bundle *added* to the
//!   platform's roots (a private CA for the broker must not stop the fleet from
//!   reaching GitHub), and an optional client certificate
//!   (`CONTEXTEN_CLIENT_CERT_FILE` + `CONTEXTEN_CLIENT_KEY_FILE`, both or
//!   neither), presented to RabbitMQ and Redis only, never to third-party
//!   HTTPS hosts.
//! - Turned into the settings of lapin ([`TlsSettings::amqp`]), redis
//!   ([`TlsSettings::redis_client`]) and reqwest ([`TlsSettings::http`]), each
//!   behind the feature of the same name.
//! - [`http_client`]: the one builder of the fleet's HTTP clients (these
//!   roots, the fleet's [`USER_AGENT`], request and connect timeouts).
//!
//! A binary calls [`init`] first thing, so a bad file is a start-up error;
//! libraries use [`global`], which reads the process environment once if no
//! binary did.

use base64::Engine as _;
use contexten_config::Env;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, OnceLock};

/// The PEM bundle of extra trusted roots.
pub const CA_FILE_VAR: &str = "CONTEXTEN_CA_FILE";
/// The client certificate chain (PEM) presented to RabbitMQ and Redis.
pub const CLIENT_CERT_VAR: &str = "CONTEXTEN_CLIENT_CERT_FILE";
/// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
pub const CLIENT_KEY_VAR: &str = "CONTEXTEN_CLIENT_KEY_FILE";

/// A TLS setting that cannot be used, or a client that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{var}={path} cannot be read: {detail}")]
    Unreadable {
        var: &'static str,
        path: String,
        detail: String,
    },
    #[error("{var}={path} is invalid: {detail}")]
    Invalid {
        var: &'static str,
        path: String,
        detail: String,
    },
    #[error("{set} is set but {missing} is not: a client certificate needs both")]
    HalfIdentity {
        set: &'static str,
        missing: &'static str,
    },
    /// A client for `endpoint` (host:port, never the credentials) cannot be built.
    #[error("TLS client for {endpoint}: {detail}")]
    Client { endpoint: String, detail: String },
}

/// Installs ring as the process's rustls provider; idempotent, and harmless
/// when it is already installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Extra roots and the client certificate, read and checked once.
#[derive(Clone, Default)]
pub struct TlsSettings {
    ca: Option<CaBundle>,
    identity: Option<ClientIdentity>,
}

#[derive(Clone)]
struct CaBundle {
    certs: Arc<[CertificateDer<'static>]>,
}

/// Read only by the lapin and redis settings (a crate may enable neither).
#[derive(Clone)]
#[cfg_attr(not(any(feature = "lapin", feature = "redis")), allow(dead_code))]
struct ClientIdentity {
    cert_pem: Arc<[u8]>,
    key_pem: Arc<[u8]>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field(
                "extra_roots",
                &self.ca.as_ref().map_or(0, |ca| ca.certs.len()),
            )
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

static GLOBAL: OnceLock<Result<TlsSettings, TlsError>> = OnceLock::new();

/// Installs the crypto provider and reads the process's TLS settings from
/// `env`; the first call decides, later calls return the same settings.
pub fn init(env: &Env) -> Result<&'static TlsSettings, TlsError> {
    install_crypto_provider();
    GLOBAL
        .get_or_init(|| TlsSettings::from_env(env))
        .as_ref()
        .map_err(Clone::clone)
}

/// The process's TLS settings ([`init`] from the process environment if no
/// binary called it).
pub fn global() -> Result<&'static TlsSettings, TlsError> {
    match GLOBAL.get() {
        Some(settings) => {
            install_crypto_provider();
            settings.as_ref().map_err(Clone::clone)
        }
        None => init(&Env::from_process()),
    }
}

fn path_of<'a>(env: &'a Env, var: &str) -> Option<&'a str> {
    env.raw(var).map(str::trim).filter(|v| !v.is_empty())
}

fn read(var: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Unreadable {
        var,
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

fn invalid(var: &'static str, path: &str, detail: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        var,
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// Every `CERTIFICATE` block of a PEM file (at least one).
fn certificates(
    var: &'static str,
    path: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(var, path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(var, path, "no PEM CERTIFICATE block in it"));
    }
    Ok(certs)
}

impl TlsSettings {
    /// No extra roots, no client certificate: the platform's roots only.
    pub fn none() -> Self {
        TlsSettings::default()
    }

    /// Reads `CONTEXTEN_CA_FILE`, `CONTEXTEN_CLIENT_CERT_FILE` and
    /// `CONTEXTEN_CLIENT_KEY_FILE` (all unset by default) and checks their
    /// contents: every certificate parses as a trust anchor, the key parses
    /// and belongs to the certificate.
    pub fn from_env(env: &Env) -> Result<Self, TlsError> {
        let ca = match path_of(env, CA_FILE_VAR) {
            None => None,
            Some(path) => {
                let certs = certificates(CA_FILE_VAR, path, &read(CA_FILE_VAR, path)?)?;
                let mut store = rustls::RootCertStore::empty();
                for (n, cert) in certs.iter().enumerate() {
                    store.add(cert.clone()).map_err(|e| {
                        invalid(CA_FILE_VAR, path, format!("certificate {}: {e}", n + 1))
                    })?;
                }
                Some(CaBundle {
                    certs: certs.into(),
                })
            }
        };
        let identity = match (path_of(env, CLIENT_CERT_VAR), path_of(env, CLIENT_KEY_VAR)) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(TlsError::HalfIdentity {
                    set: CLIENT_CERT_VAR,
                    missing: CLIENT_KEY_VAR,
                });
            }
            (None, Some(_)) => {
                return Err(TlsError::HalfIdentity {
                    set: CLIENT_KEY_VAR,
                    missing: CLIENT_CERT_VAR,
                });
            }
            (Some(cert_path), Some(key_path)) => Some(ClientIdentity::read(cert_path, key_path)?),
        };
        Ok(TlsSettings { ca, identity })
    }

    /// Whether `CONTEXTEN_CA_FILE` adds roots.
    pub fn has_extra_roots(&self) -> bool {
        self.ca.is_some()
    }

    /// Whether a client certificate is configured.
    pub fn has_client_certificate(&self) -> bool {
        self.identity.is_some()
    }
}

impl ClientIdentity {
    fn read(cert_path: &str, key_path: &str) -> Result<Self, TlsError> {
        let cert_pem = read(CLIENT_CERT_VAR, cert_path)?;
        let certs = certificates(CLIENT_CERT_VAR, cert_path, &cert_pem)?;
        let key_pem = read(CLIENT_KEY_VAR, key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            invalid(
                CLIENT_KEY_VAR,
                key_path,
                format!("no PEM private key in it: {e}"),
            )
        })?;
        // The same check rustls makes when it connects, made at start instead.
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(CLIENT_KEY_VAR, key_path, e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(certs, key)
        .map_err(|e| {
            invalid(
                CLIENT_KEY_VAR,
                key_path,
                format!("not usable with {CLIENT_CERT_VAR}: {e}"),
            )
        })?;
        Ok(ClientIdentity {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        })
    }
}

/// `certs` as PEM `CERTIFICATE` blocks.
#[cfg_attr(not(any(feature = "lapin", feature = "redis")), allow(dead_code))]
fn pem_certificates<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    let mut out = String::new();
    for cert in certs {
        let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            // Base64 output is ASCII.
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// `host:port` of a URL, for messages: never its credentials. The scheme's
/// default port when none is given (amqp 5672, amqps 5671, redis 6379).
pub fn endpoint(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return "an unparsable URL".to_owned();
    };
    let port = parsed.port().or(match parsed.scheme() {
        "amqp" => Some(5672),
        "amqps" => Some(5671),
        "redis" | "rediss" => Some(6379),
        _ => parsed.port_or_known_default(),
    });
    let host = parsed.host_str().unwrap_or("localhost");
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

#[cfg(feature = "lapin")]
impl TlsSettings {
    /// The extra roots as PEM (what lapin takes).
    fn ca_pem(&self) -> Option<String> {
        self.ca.as_ref().map(|ca| pem_certificates(ca.certs.iter()))
    }

    /// lapin's TLS settings: the extra roots are added to the platform's
    /// (lapin is built with `rustls-native-certs`), used for `amqps://` only.
    pub fn amqp(&self) -> lapin::tcp::OwnedTLSConfig {
        install_crypto_provider();
        lapin::tcp::OwnedTLSConfig {
            identity: self
                .identity
                .as_ref()
                .map(|id| lapin::tcp::OwnedIdentity::PKCS8 {
                    pem: id.cert_pem.to_vec(),
                    key: id.key_pem.to_vec(),
                }),
            cert_chain: self.ca_pem(),
        }
    }
}

#[cfg(feature = "redis")]
impl TlsSettings {
    /// A redis client for `url`; a `rediss://` URL gets the extra roots (with
    /// the platform's, which redis would otherwise use alone) and the client
    /// certificate.
    pub fn redis_client(&self, url: &str) -> Result<redis::Client, TlsError> {
        install_crypto_provider();
        let fail = |e: redis::RedisError| TlsError::Client {
            endpoint: endpoint(url),
            detail: e.to_string(),
        };
        let tls = url
            .get(..9)
            .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"));
        if !tls || (self.ca.is_none() && self.identity.is_none()) {
            return redis::Client::open(url).map_err(fail);
        }
        let root_cert = self.ca.as_ref().map(|ca| {
            // redis replaces its roots with the ones given: give both.
            let platform = rustls_native_certs::load_native_certs();
            if let Some(error) = platform.errors.first() {
                tracing::warn!(%error, "some platform root certificates could not be read");
            }
            // redis refuses the whole bundle for one root it cannot use: keep
            // the platform's usable ones (as rustls-connector does for lapin).
            let mut probe = rustls::RootCertStore::empty();
            let usable = platform
                .certs
                .iter()
                .filter(|cert| probe.add((*cert).clone()).is_ok());
            let mut pem = pem_certificates(ca.certs.iter());
            pem.push_str(&pem_certificates(usable));
            pem.into_bytes()
        });
        let client_tls = self.identity.as_ref().map(|id| redis::ClientTlsConfig {
            client_cert: id.cert_pem.to_vec(),
            client_key: id.key_pem.to_vec(),
        });
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
        .map_err(fail)
    }
}

#[cfg(feature = "reqwest")]
impl TlsSettings {
    /// Adds the extra roots to `builder` (merged with the platform verifier's).
    /// No client certificate: that is for the fleet's own infrastructure.
    pub fn http(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        install_crypto_provider();
        match &self.ca {
            None => builder,
            Some(ca) => builder.tls_certs_merge(
                ca.certs
                    .iter()
                    .filter_map(|cert| reqwest::Certificate::from_der(cert).ok()),
            ),
        }
    }
}

#[cfg(feature = "reqwest-blocking")]
impl TlsSettings {
    /// [`TlsSettings::http`] for a blocking client (the OTLP exporter's).
    pub fn http_blocking(
        &self,
        builder: reqwest::blocking::ClientBuilder,
    ) -> reqwest::blocking::ClientBuilder {
        install_crypto_provider();
        match &self.ca {
            None => builder,
            Some(ca) => builder.tls_certs_merge(
                ca.certs
                    .iter()
                    .filter_map(|cert| reqwest::Certificate::from_der(cert).ok()),
            ),
        }
    }
}

/// [`TlsSettings::http`] with the process's settings. If they are unusable
/// (the binary's [`init`] already failed at start), only the provider is
/// installed and the platform roots are used.
#[cfg(feature = "reqwest")]
pub fn http(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    install_crypto_provider();
    match global() {
        Ok(settings) => settings.http(builder),
        Err(error) => {
            tracing::warn!(%error, "TLS settings unusable: platform roots only");
            builder
        }
    }
}

/// The User-Agent of every HTTP request the fleet makes (GitHub refuses
/// requests without one).
pub const USER_AGENT: &str = concat!("contexten/", env!("CARGO_PKG_VERSION"));

/// The timeouts of an HTTP client built with [`http_client`].
#[cfg(feature = "reqwest")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// The whole request, from connecting to the last byte of the body.
    pub request: std::time::Duration,
    /// The TCP connect and TLS handshake.
    pub connect: std::time::Duration,
}

#[cfg(feature = "reqwest")]
impl HttpTimeouts {
    /// The longest connect when it is not given: a host that does not accept
    /// within it is down, whatever the request's own budget.
    pub const MAX_DEFAULT_CONNECT: std::time::Duration = std::time::Duration::from_secs(10);

    /// `request` for the whole request, the connect bounded by the smaller of
    /// `request` and [`Self::MAX_DEFAULT_CONNECT`].
    pub fn new(request: std::time::Duration) -> Self {
        HttpTimeouts {
            request,
            connect: request.min(Self::MAX_DEFAULT_CONNECT),
        }
    }
}

/// The one builder of the fleet's HTTP clients: the crypto provider and
/// `CONTEXTEN_CA_FILE` ([`http`]), the fleet's [`USER_AGENT`], and the request
/// and connect timeouts. Redirects are reqwest's default unless the caller
/// sets a policy on the returned builder (API clients switch them off; the
/// outbound guard installs its own resolver and policy on top).
#[cfg(feature = "reqwest")]
pub fn http_client(timeouts: HttpTimeouts) -> reqwest::ClientBuilder {
    http(reqwest::Client::builder())
        .user_agent(USER_AGENT)
        .timeout(timeouts.request)
        .connect_timeout(timeouts.connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_host_and_port_never_the_password() {
        assert_eq!(
            endpoint("amqps://user:s3cret@broker.example:5671/%2f"),
            "broker.example:5671"
        );
        assert_eq!(
            endpoint("amqps://u:s3cret@broker.example/%2f"),
            "broker.example:5671"
        );
        assert_eq!(endpoint("rediss://:s3cret@10.0.0.7/0"), "10.0.0.7:6379");
        assert_eq!(endpoint("https://api.github.com/x"), "api.github.com:443");
        assert!(!endpoint("not a url :s3cret@").contains("s3cret"));
    }

    #[test]
    fn pem_round_trips() {
        let der = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let pem = pem_certificates([&der]);
        let back: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, vec![der]);
    }
}
