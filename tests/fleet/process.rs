//! Child processes of the fleet: start, wait for `/readyz`, kill, restart.

use anyhow::{Context as _, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a service may take to answer `/readyz` after starting.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// The directory holding the workspace's binaries (next to this test's `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// A free loopback port, never one handed out before in this process.
pub use contexten_testkit::free_port;

/// One service of the fleet.
pub struct Service {
    /// The binary.
    pub name: &'static str,
    /// The replica's name in logs (`generator-worker-1`).
    pub log_name: &'static str,
    /// The address serving `/healthz`, `/readyz`, `/metrics`.
    pub health_addr: String,
    env: BTreeMap<String, String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// A service with its environment; call [`Service::start`] to run it.
    pub fn new(
        name: &'static str,
        health_addr: String,
        env: BTreeMap<String, String>,
        log_dir: &std::path::Path,
    ) -> Self {
        Self::new_named(name, name, health_addr, env, log_dir)
    }

    /// A replica with its own log name.
    pub fn new_named(
        name: &'static str,
        log_name: &'static str,
        health_addr: String,
        env: BTreeMap<String, String>,
        log_dir: &std::path::Path,
    ) -> Self {
        let log = log_dir.join(format!("{log_name}.log"));
        Service {
            name,
            log_name,
            health_addr,
            env,
            child: None,
            log,
        }
    }

    /// Starts the binary (logs appended to `<log_dir>/<name>.log`).
    pub fn start(&mut self) -> anyhow::Result<()> {
        let path = bin_dir().join(self.name);
        if !path.exists() {
            bail!(
                "{} is not built (run `cargo build --workspace --bins`)",
                path.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&path)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `/readyz` answers 200 with every component ready, advisory
    /// ones included: ingest is ready while it serves, and a test wants its
    /// broker connection up too before it sends anything.
    pub async fn wait_ready(&self, client: &reqwest::Client) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.health_addr);
        let ready = contexten_testkit::poll(READY_WITHIN, Duration::from_millis(100), || async {
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|body| {
                        let components = body["components"].as_object()?.clone();
                        Some(components.values().all(|c| c["ready"] == true))
                    })
                    .unwrap_or(false),
                _ => false,
            }
        })
        .await;
        if ready.is_err() {
            bail!(
                "{} not ready on {url} within {READY_WITHIN:?}; its log ends:\n{}",
                self.log_name,
                self.log_tail(60)
            );
        }
        Ok(())
    }

    /// SIGKILL: no shutdown, in-flight work is the broker's to redeliver.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
            }
            tokio::time::timeout(Duration::from_secs(40), child.wait())
                .await
                .with_context(|| format!("{} did not stop on SIGTERM", self.name))??;
        }
        Ok(())
    }

    /// The running process's id (the fleet benchmark reads its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The tail of the service's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
