//! A TCP proxy on loopback in front of a server (RabbitMQ, Redis, HTTP)
//! whose open connections a test can cut: a network fault without touching
//! the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards every connection on its port to `upstream`. [`cut`](Self::cut)
/// drops the open ones (new ones are still accepted), [`stop`](Self::stop)
/// also refuses new ones until [`resume`](Self::resume); drop stops it.
pub struct TcpProxy {
    port: u16,
    refusing: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("port", &self.port)
            .finish()
    }
}

impl TcpProxy {
    /// Listens on a free loopback port; `upstream` is `host:port`.
    pub async fn start(upstream: &str) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let upstream = upstream.to_owned();
        let tracked = links.clone();
        let refusing = Arc::new(AtomicBool::new(false));
        let refuse = refusing.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut links = tracked.lock().unwrap_or_else(PoisonError::into_inner);
                links.retain(|l| !l.is_finished());
                links.push(link);
            }
        });
        Ok(TcpProxy {
            port,
            refusing,
            links,
            accept,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Drops every open connection (new ones are still accepted).
    pub fn cut(&self) {
        for link in self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            link.abort();
        }
    }

    /// The server "stops": open connections are cut and new ones closed at
    /// once, until [`resume`](Self::resume).
    pub fn stop(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// The server is back: new connections are forwarded again.
    pub fn resume(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
