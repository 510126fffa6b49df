use crate::certs::TestCerts;
use crate::process::{self, Mark};
use anyhow::{Context as _, bail};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How to start a [`RedisNode`].
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `maxmemory` (e.g. "2mb").
    pub maxmemory: Option<String>,
    /// `maxmemory-policy` (e.g. "noeviction").
    pub policy: Option<String>,
    /// `appendonly yes`: data survives `kill` + `restart`.
    pub appendonly: bool,
    /// Adds a TLS port beside the plain one.
    pub tls: Option<TestCerts>,
    /// `tls-auth-clients`: "no", "optional" (default) or "yes".
    pub tls_auth_clients: Option<String>,
    /// Further `--name value` arguments (e.g. `--replicaof 127.0.0.1 <port>`).
    pub extra_args: Vec<String>,
}

impl RedisOptions {
    pub fn maxmemory(mut self, bytes: impl Into<String>) -> Self {
        self.maxmemory = Some(bytes.into());
        self
    }
    pub fn policy(mut self, policy: impl Into<String>) -> Self {
        self.policy = Some(policy.into());
        self
    }
    pub fn appendonly(mut self, on: bool) -> Self {
        self.appendonly = on;
        self
    }
    pub fn tls(mut self, certs: &TestCerts) -> Self {
        self.tls = Some(certs.clone());
        self
    }
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }
    pub fn tls_auth_clients(mut self, mode: impl Into<String>) -> Self {
        self.tls_auth_clients = Some(mode.into());
        self
    }
}

/// A `redis-server` of the test's own on a free loopback port, with its data
/// in a temporary directory. Killed (and its directory removed) on drop.
pub struct RedisNode {
    port: u16,
    tls_port: Option<u16>,
    args: Vec<String>,
    mark: Mark,
    child: Mutex<Option<Child>>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for RedisNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisNode")
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .finish_non_exhaustive()
    }
}

impl RedisNode {
    /// Starts the server and returns once it answers PING.
    pub async fn start(options: RedisOptions) -> anyhow::Result<RedisNode> {
        let dir = tempfile::Builder::new()
            .prefix("contexten-redis-")
            .tempdir()
            .context("creating the server's directory")?;
        let port = crate::free_port();
        let tls_port = options.tls.as_ref().map(|_| crate::free_port());
        let root = dir.path().display().to_string();
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--dir",
            &root,
            "--logfile",
            &format!("{root}/redis.log"),
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            if options.appendonly { "yes" } else { "no" },
            "--appendfsync",
            "everysec",
        ]
        .map(String::from)
        .to_vec();
        args.extend(options.extra_args.iter().cloned());
        if let Some(bytes) = &options.maxmemory {
            args.extend(["--maxmemory".into(), bytes.clone()]);
        }
        if let Some(policy) = &options.policy {
            args.extend(["--maxmemory-policy".into(), policy.clone()]);
        }
        if let (Some(tls_port), Some(certs)) = (tls_port, &options.tls) {
            let auth = options.tls_auth_clients.as_deref().unwrap_or("optional");
            args.extend([
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                certs.server_cert.display().to_string(),
                "--tls-key-file".into(),
                certs.server_key.display().to_string(),
                "--tls-ca-cert-file".into(),
                certs.ca.display().to_string(),
                "--tls-auth-clients".into(),
                auth.into(),
            ]);
        }
        let node = RedisNode {
            port,
            tls_port,
            args,
            mark: Mark::Title(format!("redis-server 127.0.0.1:{port}")),
            child: Mutex::new(None),
            dir,
        };
        process::spawn_watchdog(node.dir.path(), &node.mark)?;
        node.boot().await?;
        Ok(node)
    }

    /// A Redis Sentinel (`redis-server <conf> --sentinel`) watching the
    /// master `master` on `127.0.0.1:<master_port>`, agreeing on a failure
    /// with `quorum` sentinels; it notices a dead master within a second.
    pub async fn start_sentinel(
        master: &str,
        master_port: u16,
        quorum: u32,
    ) -> anyhow::Result<RedisNode> {
        let dir = tempfile::Builder::new()
            .prefix("contexten-sentinel-")
            .tempdir()
            .context("creating the sentinel's directory")?;
        let port = crate::free_port();
        let root = dir.path().display().to_string();
        // Sentinel rewrites its config file (what it learnt), so it is its own.
        let conf = format!("{root}/sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport {port}\ndir {root}\nlogfile {root}/redis.log\n\
                 sentinel monitor {master} 127.0.0.1 {master_port} {quorum}\n\
                 sentinel down-after-milliseconds {master} 1000\n\
                 sentinel failover-timeout {master} 5000\n\
                 sentinel parallel-syncs {master} 1\n"
            ),
        )?;
        let node = RedisNode {
            port,
            tls_port: None,
            args: vec![conf, "--sentinel".into()],
            mark: Mark::Title(format!("redis-server 127.0.0.1:{port}")),
            child: Mutex::new(None),
            dir,
        };
        process::spawn_watchdog(node.dir.path(), &node.mark)?;
        node.boot().await?;
        Ok(node)
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://127.0.0.1:<tls port>` when started with TLS.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("rediss://127.0.0.1:{p}"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's directory (data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Freezes this server (SIGSTOP) for `duration`, then resumes it
    /// (SIGCONT): connections stay open but nothing answers. Resumed also when
    /// the future is dropped early.
    pub async fn pause(&self, duration: Duration) -> anyhow::Result<()> {
        struct Resume<'a>(&'a [u32]);
        impl Drop for Resume<'_> {
            fn drop(&mut self) {
                process::signal(self.0, "CONT");
            }
        }
        let pids = process::marked_pids(&self.mark);
        if pids.is_empty() {
            bail!("redis-server on port {} is not running", self.port);
        }
        process::signal(&pids, "STOP");
        let _resume = Resume(&pids);
        tokio::time::sleep(duration).await;
        Ok(())
    }

    /// A crash: SIGKILL, no save.
    pub async fn kill(&self) -> anyhow::Result<()> {
        let child = self.take_child();
        let mark = self.mark.clone();
        tokio::task::spawn_blocking(move || process::kill_all(&mark, child)).await?;
        Ok(())
    }

    /// Starts the server again on the same ports and directory (a running
    /// one is killed first).
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.kill().await?;
        self.boot().await
    }

    /// A 2 MB server with `maxmemory-policy` `policy` (`noeviction` to be
    /// filled with [`fill_until_oom`](Self::fill_until_oom), an evicting one
    /// to evict); panics when it does not start.
    pub async fn small(policy: &str) -> RedisNode {
        RedisNode::start(RedisOptions::default().maxmemory("2mb").policy(policy))
            .await
            .expect("a Redis of the test's own")
    }

    /// Writes values under `filler:*` until the server refuses even a small
    /// one with `OOM` (start it with a small `maxmemory` and `noeviction`; the
    /// request itself counts towards used memory, so big values are refused
    /// first), then pins it full: `maxmemory` goes below what it holds, so no
    /// freed buffer lets a small write through (an operator's Redis at its
    /// limit). Fails if the server never refuses, or evicts instead.
    pub async fn fill_until_oom(&self) -> anyhow::Result<()> {
        let mut conn = ::redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await?;
        let mut refused = false;
        'sizes: for size in [64 << 10, 4 << 10, 256, 16] {
            let value = vec![b'x'; size];
            for i in 0..4_000 {
                let written: ::redis::RedisResult<()> = ::redis::cmd("SET")
                    .arg(format!("filler:{size}:{i}"))
                    .arg(&value)
                    .query_async(&mut conn)
                    .await;
                match written {
                    Err(e) if e.to_string().contains("OOM") => {
                        refused = true;
                        continue 'sizes;
                    }
                    Err(e) => bail!("unexpected error while filling: {e}"),
                    Ok(()) => {}
                }
            }
        }
        if !refused {
            bail!("redis on {} never refused a write with OOM", self.port);
        }
        self.pin_full().await
    }

    /// Lowers `maxmemory` to 1 MB, below what a filled server holds, so it
    /// stays full.
    pub async fn pin_full(&self) -> anyhow::Result<()> {
        self.config_set("maxmemory", "1mb").await
    }

    /// `CONFIG SET <key> <value>` (e.g. raise `maxmemory` to make room again).
    pub async fn config_set(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let mut conn = ::redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await?;
        let _: () = ::redis::cmd("CONFIG")
            .arg("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    fn take_child(&self) -> Option<Child> {
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    async fn boot(&self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        *self.child.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
        let exited = || {
            let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
            let status = child.as_mut()?.try_wait().ok()??;
            Some(format!(
                "{status}; log tail: {}",
                process::tail(&self.dir.path().join("redis.log"), 2000)
            ))
        };
        process::wait_port(self.port, Duration::from_secs(30), exited).await?;
        // The port opens before an AOF is loaded; PING says LOADING until then.
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match ping(self.port).await {
                Ok(reply) if reply.starts_with("+PONG") => break,
                _ if Instant::now() > until => bail!("redis on {} never answered PONG", self.port),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        if let Some(port) = self.tls_port {
            process::wait_port(port, Duration::from_secs(10), || None).await?;
        }
        Ok(())
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        let child = self.take_child();
        process::kill_all(&self.mark, child);
    }
}

/// One raw `PING` on a fresh connection.
pub(crate) async fn ping(port: u16) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"PING\r\n").await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
