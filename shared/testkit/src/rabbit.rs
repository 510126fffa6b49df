use crate::certs::TestCerts;
use crate::process::{self, MARK_VAR, Mark};
use anyhow::{Context as _, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
/// A cold node boots in a few seconds; a loaded 2-core machine needs more.
const BOOT_WITHIN: Duration = Duration::from_secs(90);

/// How to start a [`RabbitNode`].
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// Adds an amqps listener with these certificates (server cert and key,
    /// `ca` as the trust for client certificates).
    pub tls: Option<TestCerts>,
    /// `ssl_options.verify = verify_peer` (default): a client certificate, when
    /// one is shown, must chain to `ca`.
    pub verify_peer: bool,
    /// `ssl_options.fail_if_no_peer_cert` (default false): refuse clients that
    /// show no certificate.
    pub fail_if_no_peer_cert: bool,
    /// Enables the management plugin on its own free port (off by default:
    /// it doubles the boot time).
    pub management: bool,
    /// Enables the `rabbitmq_prometheus` plugin on its own free port (its
    /// `/metrics` and `/metrics/per-object`; docs/operations.md "Alerts").
    pub prometheus: bool,
    /// Extra `rabbitmq.conf` lines (`key = value`).
    pub extra_config: Vec<String>,
    /// The Erlang cookie (default: one of the node's own); the nodes of a
    /// cluster share one ([`crate::RabbitCluster`]).
    pub cookie: Option<String>,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        RabbitOptions {
            tls: None,
            verify_peer: true,
            fail_if_no_peer_cert: false,
            management: false,
            prometheus: false,
            extra_config: Vec::new(),
            cookie: None,
        }
    }
}

impl RabbitOptions {
    pub fn tls(mut self, certs: &TestCerts) -> Self {
        self.tls = Some(certs.clone());
        self
    }
    pub fn verify_peer(mut self, on: bool) -> Self {
        self.verify_peer = on;
        self
    }
    pub fn fail_if_no_peer_cert(mut self, on: bool) -> Self {
        self.fail_if_no_peer_cert = on;
        self
    }
    pub fn management(mut self, on: bool) -> Self {
        self.management = on;
        self
    }
    pub fn prometheus(mut self, on: bool) -> Self {
        self.prometheus = on;
        self
    }
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(cookie.into());
        self
    }
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }
}

/// A RabbitMQ node of the test's own: own node name, free AMQP and
/// distribution ports, data, logs, Erlang cookie and HOME in a temporary
/// directory. It registers with the machine's epmd like any node but shares
/// nothing else with the machine's broker. Dropping it kills its processes
/// and removes its directory.
pub struct RabbitNode {
    name: String,
    mark: Mark,
    amqp_port: u16,
    amqps_port: Option<u16>,
    dist_port: u16,
    management_port: Option<u16>,
    prometheus_port: Option<u16>,
    child: Mutex<Option<Child>>,
    // Last: removed after Drop has killed the processes.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for RabbitNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitNode")
            .field("name", &self.name)
            .field("amqp_port", &self.amqp_port)
            .field("amqps_port", &self.amqps_port)
            .finish_non_exhaustive()
    }
}

impl RabbitNode {
    /// Starts the node and returns once it accepts AMQP connections.
    pub async fn start(options: RabbitOptions) -> anyhow::Result<RabbitNode> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::Builder::new()
            .prefix("contexten-rabbit-")
            .tempdir()
            .context("creating the node's directory")?;
        let amqp_port = crate::free_port();
        let dist_port = crate::free_port();
        let amqps_port = options.tls.as_ref().map(|_| crate::free_port());
        let management_port = options.management.then(crate::free_port);
        let prometheus_port = options.prometheus.then(crate::free_port);
        let name = format!(
            "ctk-{}-{}-{amqp_port}@localhost",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let root = dir.path();
        for sub in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        write_cookie(
            &root.join("home/.erlang.cookie"),
            options.cookie.as_deref().unwrap_or(&name),
        )?;
        // Our own env file, so the machine's rabbitmq-env.conf (its node name)
        // is never read.
        std::fs::write(root.join("rabbitmq-env.conf"), "")?;
        let plugins: Vec<&str> = [
            (options.management, "rabbitmq_management"),
            (options.prometheus, "rabbitmq_prometheus"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        std::fs::write(
            root.join("enabled_plugins"),
            format!("[{}].\n", plugins.join(",")),
        )?;
        std::fs::write(
            root.join("rabbitmq.conf"),
            config(
                &options,
                amqp_port,
                amqps_port,
                management_port,
                prometheus_port,
            ),
        )?;
        let node = RabbitNode {
            mark: Mark::Env(root.display().to_string()),
            name,
            amqp_port,
            amqps_port,
            dist_port,
            management_port,
            prometheus_port,
            child: Mutex::new(None),
            dir,
        };
        process::spawn_watchdog(node.dir.path(), &node.mark)?;
        node.boot().await?;
        Ok(node)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// `amqps://guest:guest@127.0.0.1:<port>/%2f` when started with TLS.
    pub fn amqps_url(&self) -> Option<String> {
        self.amqps_port
            .map(|p| format!("amqps://guest:guest@127.0.0.1:{p}/%2f"))
    }

    /// The management plugin's base URL when started with it.
    pub fn management_url(&self) -> Option<String> {
        self.management_port
            .map(|p| format!("http://127.0.0.1:{p}"))
    }

    /// The Prometheus plugin's base URL when started with it
    /// (`<url>/metrics`, `<url>/metrics/per-object`).
    pub fn prometheus_url(&self) -> Option<String> {
        self.prometheus_port
            .map(|p| format!("http://127.0.0.1:{p}"))
    }

    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    pub fn amqps_port(&self) -> Option<u16> {
        self.amqps_port
    }

    /// The Erlang node name, for `rabbitmqctl -n`.
    pub fn node_name(&self) -> &str {
        &self.name
    }

    /// The node's directory (data, logs, config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A broker crash: SIGKILL to the node's OS processes, no goodbye to
    /// clients. Data stays for [`restart`](Self::restart).
    pub async fn kill(&self) -> anyhow::Result<()> {
        let child = self.take_child();
        let mark = self.mark.clone();
        tokio::task::spawn_blocking(move || process::kill_all(&mark, child)).await?;
        Ok(())
    }

    /// A clean shutdown (`rabbitmqctl stop`): clients get connection.close.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let stopped = self.ctl(&["stop"]).await;
        let child = self.take_child();
        let mark = self.mark.clone();
        tokio::task::spawn_blocking(move || {
            let until = Instant::now() + Duration::from_secs(30);
            while !process::marked_pids(&mark).is_empty() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            process::kill_all(&mark, child);
        })
        .await?;
        stopped.map(drop)
    }

    /// Starts the node again on the same ports and data (after `kill` or
    /// `stop`; a running node is stopped first).
    pub async fn restart(&self) -> anyhow::Result<()> {
        if !process::marked_pids(&self.mark).is_empty() {
            self.stop().await?;
        }
        self.boot().await
    }

    /// Raises (`true`) or clears the memory alarm by moving the high
    /// watermark, and returns once the node reports the alarm in that state:
    /// while raised, the broker blocks every publishing connection.
    pub async fn set_memory_alarm(&self, on: bool) -> anyhow::Result<()> {
        let mark = if on { "0.0000001" } else { "0.4" };
        self.ctl(&["set_vm_memory_high_watermark", mark]).await?;
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let alarms = self.ctl(&["eval", "rabbit_alarm:get_alarms()."]).await?;
            if alarms.contains("resource_limit,memory") == on {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("memory alarm not {on} after 30 s: {alarms}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `rabbitmqctl -n <node> <args>` and returns its stdout.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = tokio::process::Command::new(CTL);
        self.scrub_env(cmd.as_std_mut());
        cmd.arg("-n").arg(&self.name).args(args);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .with_context(|| format!("rabbitmqctl {args:?} timed out"))?
            .context("running rabbitmqctl")?;
        if !out.status.success() {
            bail!(
                "rabbitmqctl {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn take_child(&self) -> Option<Child> {
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The environment of every rabbitmq command: none of the machine's
    /// RabbitMQ or Erlang settings, our HOME (cookie) and env file.
    fn scrub_env(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("RABBITMQ_") || k.starts_with("ERL_") {
                cmd.env_remove(&key);
            }
        }
        let root = self.dir.path();
        cmd.env("HOME", root.join("home"))
            .env("RABBITMQ_CONF_ENV_FILE", root.join("rabbitmq-env.conf"))
            // No erl_crash.dump in the caller's directory (the repository) when
            // a VM fails, e.g. a rabbitmqctl racing the node's removal.
            .env("ERL_CRASH_DUMP_BYTES", "0");
    }

    async fn boot(&self) -> anyhow::Result<()> {
        let root = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("server.log"))?;
        let mut cmd = Command::new(SERVER);
        self.scrub_env(&mut cmd);
        // The mark is the directory (see `start`).
        cmd.env(MARK_VAR, root)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", root.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", root.join("log"))
            .env("RABBITMQ_CONFIG_FILE", root.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                root.join("enabled_plugins"),
            )
            .env("RABBITMQ_PID_FILE", root.join("pid"))
            // Only if no epmd runs yet: the one the node starts stays on loopback.
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_FLAGS", "-kernel inet_dist_use_interface {127,0,0,1}")
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group: a Ctrl-C meant for the test run is not
        // delivered to the node half-way through a test.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().with_context(|| format!("starting {SERVER}"))?;
        *self.child.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
        let exited = || {
            let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
            let status = child.as_mut()?.try_wait().ok()??;
            Some(format!(
                "{status}; log tail: {}",
                process::tail(&self.dir.path().join("server.log"), 2000)
            ))
        };
        process::wait_port(self.amqp_port, BOOT_WITHIN, exited)
            .await
            .with_context(|| format!("booting RabbitMQ node {}", self.name))?;
        self.ctl(&["await_startup", "--timeout", "60"]).await?;
        if let Some(port) = self.amqps_port {
            process::wait_port(port, Duration::from_secs(30), || None).await?;
        }
        Ok(())
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let child = self.take_child();
        process::kill_all(&self.mark, child);
    }
}

fn write_cookie(path: &PathBuf, seed: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let cookie: String = seed
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_uppercase() as char)
        .collect();
    std::fs::write(path, cookie)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400))?;
    Ok(())
}

fn config(
    options: &RabbitOptions,
    amqp_port: u16,
    amqps_port: Option<u16>,
    management_port: Option<u16>,
    prometheus_port: Option<u16>,
) -> String {
    let mut conf = format!(
        "listeners.tcp.default = 127.0.0.1:{amqp_port}\n\
         loopback_users.guest = true\n\
         disk_free_limit.absolute = 1MB\n\
         log.console = false\n"
    );
    if let (Some(port), Some(certs)) = (amqps_port, &options.tls) {
        let verify = if options.verify_peer {
            "verify_peer"
        } else {
            "verify_none"
        };
        let _ = write!(
            conf,
            "listeners.ssl.default = 127.0.0.1:{port}\n\
             ssl_options.cacertfile = {}\n\
             ssl_options.certfile = {}\n\
             ssl_options.keyfile = {}\n\
             ssl_options.verify = {verify}\n\
             ssl_options.fail_if_no_peer_cert = {}\n",
            certs.ca.display(),
            certs.server_cert.display(),
            certs.server_key.display(),
            options.fail_if_no_peer_cert,
        );
    }
    if let Some(port) = management_port {
        let _ = writeln!(
            conf,
            "management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {port}"
        );
    }
    if let Some(port) = prometheus_port {
        let _ = writeln!(
            conf,
            "prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = {port}"
        );
    }
    for line in &options.extra_config {
        let _ = writeln!(conf, "{line}");
    }
    conf
}
