//! The guard inside reqwest, so every connection a client makes (the first
//! request and each redirect hop) goes only to checked addresses.
//!
//! Three pieces, because reqwest consults each in a different case:
//! - [`GuardResolver`] replaces DNS: every host *name* reqwest connects to is
//!   resolved and judged here, so nothing reaches an address the guard refuses.
//! - The redirect policy judges each hop's scheme, credentials and IP literal
//!   (reqwest connects to a literal without asking the resolver) and stops after
//!   [`MAX_REDIRECTS`].
//! - [`GuardedClient`] checks the first request's URL itself, for the same reason.
//!
//! Proxies are switched off: through a proxy the resolver would judge the proxy's
//! name, never the target's.

use super::{OutboundGuard, OutboundRefusal, Purpose};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{ClientBuilder, Method, Request, RequestBuilder, Response, Url, redirect};
use std::net::SocketAddr;
use std::sync::Arc;

/// Redirect hops followed before giving up (webhooks and git hosts need one or two).
pub const MAX_REDIRECTS: usize = 5;

/// A reqwest DNS resolver that refuses names resolving to refused addresses.
#[derive(Debug, Clone)]
pub struct GuardResolver {
    guard: Arc<OutboundGuard>,
    purpose: Purpose,
}

impl GuardResolver {
    /// A resolver applying `guard`; `purpose` words its refusals.
    pub fn new(guard: OutboundGuard, purpose: Purpose) -> Self {
        GuardResolver {
            guard: Arc::new(guard),
            purpose,
        }
    }
}

impl Resolve for GuardResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        let purpose = self.purpose;
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let ips = guard.resolve_checked(&name, purpose).await?;
            // Port 0: reqwest puts in the URL's port.
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

impl OutboundGuard {
    /// Installs the resolver and the checking redirect policy on `builder`, and
    /// switches proxies off. Do not add `resolve`/`resolve_to_addrs` overrides
    /// afterwards: they bypass the resolver. The first request still needs
    /// [`check`](Self::check), or use [`GuardedClient`], which does it.
    pub fn harden(&self, builder: ClientBuilder, purpose: Purpose) -> ClientBuilder {
        // reqwest is built with rustls but no provider: contexten-tls installs
        // the tree's one (ring) and adds CONTEXTEN_CA_FILE to the roots.
        let builder = contexten_tls::http(builder);
        let guard = Arc::new(self.clone());
        let hops = Arc::clone(&guard);
        let policy = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match hops.check_redirect(attempt.url(), purpose) {
                Ok(()) => attempt.follow(),
                Err(refusal) => attempt.error(refusal),
            }
        });
        builder
            .no_proxy()
            .redirect(policy)
            .dns_resolver(GuardResolver { guard, purpose })
    }

    /// A new hardened [`reqwest::ClientBuilder`]: the fleet's client
    /// (`contexten_tls::http_client`: user agent and `timeouts`) with the
    /// guard's resolver and redirect policy.
    pub fn client_builder(
        &self,
        purpose: Purpose,
        timeouts: contexten_tls::HttpTimeouts,
    ) -> ClientBuilder {
        self.harden(contexten_tls::http_client(timeouts), purpose)
    }
}

/// A refused or failed request through a [`GuardedClient`].
#[derive(Debug, thiserror::Error)]
pub enum GuardedError {
    /// The guard refused the URL or a redirect hop; nothing was sent there.
    #[error(transparent)]
    Refused(OutboundRefusal),
    #[error("outbound request failed: {0}")]
    Http(#[source] reqwest::Error),
}

impl From<reqwest::Error> for GuardedError {
    /// Digs the guard's refusal out of reqwest's error chain (the resolver's and
    /// the redirect policy's errors arrive wrapped).
    fn from(error: reqwest::Error) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(current) = source {
            if let Some(refusal) = current.downcast_ref::<OutboundRefusal>() {
                return GuardedError::Refused(refusal.clone());
            }
            source = current.source();
        }
        GuardedError::Http(error)
    }
}

/// A reqwest client that checks the first URL too, so no request it sends
/// reaches an address the guard refuses.
#[derive(Debug, Clone)]
pub struct GuardedClient {
    client: reqwest::Client,
    guard: Arc<OutboundGuard>,
    purpose: Purpose,
}

impl GuardedClient {
    /// Hardens `builder` (timeouts, TLS and headers set on it are kept) and builds.
    pub fn new(
        guard: &OutboundGuard,
        purpose: Purpose,
        builder: ClientBuilder,
    ) -> Result<Self, reqwest::Error> {
        Ok(GuardedClient {
            client: guard.harden(builder, purpose).build()?,
            guard: Arc::new(guard.clone()),
            purpose,
        })
    }

    /// A request to fill in; send it with [`send`](Self::send), not its own
    /// `.send()`, which would skip the check of the first URL.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Checks the URL, then sends.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, GuardedError> {
        self.execute(request.build()?).await
    }

    /// Checks the URL, then executes.
    pub async fn execute(&self, request: Request) -> Result<Response, GuardedError> {
        self.guard
            .check(request.url().as_str(), self.purpose)
            .await
            .map_err(GuardedError::Refused)?;
        Ok(self.client.execute(request).await?)
    }
}

#[cfg(test)]
mod tests {
    //! End to end against listeners on 127.0.0.1 only. A refused destination is
    //! a listener nobody serves: after the request, `accept` must time out.
    use super::*;
    use crate::outbound::AllowList;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// How long a refused destination is watched for a connection.
    const NO_CONNECTION_WAIT: Duration = Duration::from_millis(300);
    /// Bound on each request, so a mistake fails instead of hanging.
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

    async fn listener() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    /// Answers every connection with `response`, counting requests.
    fn serve(listener: TcpListener, response: String) -> Arc<AtomicUsize> {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        count
    }

    fn redirect_to(location: &str) -> String {
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    async fn assert_no_connection(listener: &TcpListener) {
        let accepted = tokio::time::timeout(NO_CONNECTION_WAIT, listener.accept()).await;
        assert!(
            accepted.is_err(),
            "the refused destination was connected to"
        );
    }

    fn client(guard: &OutboundGuard) -> GuardedClient {
        let builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        GuardedClient::new(guard, Purpose::Callback, builder).unwrap()
    }

    async fn get(client: &GuardedClient, url: &str) -> Result<Response, GuardedError> {
        client
            .send(client.request(Method::GET, url.parse().unwrap()))
            .await
    }

    #[tokio::test]
    async fn loopback_literal_and_localhost_are_refused_before_connecting() {
        let (target, port) = listener().await;
        let guarded = client(&OutboundGuard::default());
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
        ] {
            let error = get(&guarded, &url).await.unwrap_err();
            assert!(matches!(error, GuardedError::Refused(_)), "{url}: {error}");
        }
        assert_no_connection(&target).await;
    }

    #[tokio::test]
    async fn the_resolver_alone_refuses_a_name_that_resolves_to_loopback() {
        // A plain hardened client, without GuardedClient's first check.
        let (target, port) = listener().await;
        let client = OutboundGuard::default()
            .client_builder(
                Purpose::Callback,
                contexten_tls::HttpTimeouts::new(REQUEST_TIMEOUT),
            )
            .build()
            .unwrap();
        let error = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let GuardedError::Refused(refusal) = GuardedError::from(error) else {
            panic!("not refused by the guard");
        };
        assert!(refusal.to_string().contains("loopback"), "{refusal}");
        assert_no_connection(&target).await;
    }

    #[tokio::test]
    async fn redirect_to_a_refused_destination_is_not_followed() {
        // The allowed hop is the name `localhost`; the refused hop is the literal
        // 127.0.0.1, which a host entry does not cover, on a second port.
        let (refused, refused_port) = listener().await;
        let (redirector, port) = listener().await;
        let hits = serve(
            redirector,
            redirect_to(&format!("http://127.0.0.1:{refused_port}/")),
        );
        let guard = OutboundGuard::new(AllowList::parse("localhost").unwrap());
        let error = get(&client(&guard), &format!("http://localhost:{port}/"))
            .await
            .unwrap_err();
        let GuardedError::Refused(refusal) = error else {
            panic!("not refused by the guard: {error}");
        };
        assert!(refusal.to_string().contains("127.0.0.1"), "{refusal}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_no_connection(&refused).await;
    }

    #[tokio::test]
    async fn allow_listed_address_is_reached_through_redirects() {
        let (second, second_port) = listener().await;
        serve(second, ok("reached"));
        let (first, port) = listener().await;
        serve(
            first,
            redirect_to(&format!("http://127.0.0.1:{second_port}/")),
        );
        let guard = OutboundGuard::new(AllowList::parse("127.0.0.1").unwrap());
        let response = get(&client(&guard), &format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "reached");
    }

    #[tokio::test]
    async fn allow_loopback_reaches_localhost() {
        let (server, port) = listener().await;
        serve(server, ok("local"));
        let guard = OutboundGuard::default().allow_loopback(true);
        let response = get(&client(&guard), &format!("http://localhost:{port}/"))
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "local");
    }

    #[tokio::test]
    async fn a_redirect_loop_stops_after_the_hop_limit() {
        let (server, port) = listener().await;
        let hits = serve(server, redirect_to(&format!("http://127.0.0.1:{port}/")));
        let guard = OutboundGuard::new(AllowList::parse("127.0.0.1").unwrap());
        let error = get(&client(&guard), &format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_err();
        assert!(matches!(error, GuardedError::Http(_)), "{error}");
        assert_eq!(hits.load(Ordering::SeqCst), MAX_REDIRECTS + 1);
    }
}
