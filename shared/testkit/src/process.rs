//! Process plumbing shared by the nodes: each node names its processes by a
//! [`Mark`], so the node (and its watchdog) signal exactly those processes and
//! never anything else on the machine.

use anyhow::{Context as _, bail};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable whose `NAME=value` line marks a node's processes.
pub const MARK_VAR: &str = "CONTEXTEN_TESTKIT_NODE";

/// How a node's processes are recognised in /proc.
#[derive(Debug, Clone)]
pub enum Mark {
    /// `MARK_VAR=<value>` in the environment (inherited by every process the
    /// node forks: the RabbitMQ wrapper script, beam, its helpers).
    Env(String),
    /// The process title, for redis-server, which overwrites its environment
    /// with its title (`redis-server 127.0.0.1:<port>`: unique per port).
    Title(String),
}

impl Mark {
    fn owns(&self, pid: u32) -> bool {
        // A node that finds no epmd starts one with its own environment; that
        // epmd serves the machine's nodes too and is never ours to kill.
        if std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_ascii() == b"epmd") {
            return false;
        }
        let (file, want) = match self {
            Mark::Env(value) => ("environ", format!("{MARK_VAR}={value}")),
            Mark::Title(title) => ("cmdline", title.clone()),
        };
        let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{file}")) else {
            return false;
        };
        let mut fields = bytes.split(|b| *b == 0);
        match self {
            Mark::Env(_) => fields.any(|kv| kv == want.as_bytes()),
            Mark::Title(_) => fields.next() == Some(want.as_bytes()),
        }
    }
}

/// Pids of the live processes that carry `mark`.
pub fn marked_pids(mark: &Mark) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| mark.owns(*pid))
        .collect()
}

/// Sends `signal` (a `kill` name: KILL, STOP, CONT) to each pid.
pub fn signal(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGKILLs every process of the node, then reaps the one we spawned.
pub fn kill_all(mark: &Mark, child: Option<Child>) {
    signal(&marked_pids(mark), "KILL");
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
    // Grandchildren (beam under the wrapper script) are reparented, and one
    // may have been forked after the first look: signal whatever is left
    // until none remains, so a restart or the next test finds the ports free.
    // (On a loaded machine a large VM can take seconds to go.)
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let left = marked_pids(mark);
        if left.is_empty() || Instant::now() >= until {
            break;
        }
        signal(&left, "KILL");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A watchdog that kills the node's processes and removes its directory if
/// the test process dies without dropping the node (a panic that aborts, a
/// killed test run). It exits by itself once the directory is gone.
pub fn spawn_watchdog(dir: &Path, mark: &Mark) -> anyhow::Result<()> {
    // env: any line of the environment is `want`; title: the first
    // NUL-separated field of the command line is `want`.
    const SCRIPT: &str = r#"
parent=$1; dir=$2; kind=$3; want=$4
while kill -0 "$parent" 2>/dev/null && [ -d "$dir" ]; do sleep 1; done
[ -d "$dir" ] || exit 0
for d in /proc/[0-9]*; do
  [ "$(cat "$d/comm" 2>/dev/null)" = epmd ] && continue
  if [ "$kind" = env ]; then
    tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qxF "$want" || continue
  else
    [ "$(tr '\0' '\n' < "$d/cmdline" 2>/dev/null | head -n 1)" = "$want" ] || continue
  fi
  kill -9 "${d#/proc/}" 2>/dev/null
done
rm -rf "$dir"
"#;
    let (kind, want) = match mark {
        Mark::Env(value) => ("env", format!("{MARK_VAR}={value}")),
        Mark::Title(title) => ("title", title.clone()),
    };
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT, "contexten-testkit-watchdog"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(kind)
        .arg(want)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning the node watchdog")?;
    // Reap it when it exits (after the node's directory is removed).
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// Waits until `port` on loopback accepts a TCP connection, failing early if
/// the node's process exits.
pub async fn wait_port(
    port: u16,
    within: Duration,
    mut exited: impl FnMut() -> Option<String>,
) -> anyhow::Result<()> {
    let until = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Some(why) = exited() {
            bail!("the node exited before port {port} answered: {why}");
        }
        if Instant::now() > until {
            bail!("port {port} did not answer within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `n` bytes of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(n);
    String::from_utf8_lossy(&text[start..]).into_owned()
}
