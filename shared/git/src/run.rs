//! Runs one git process under the [`Policy`]: empty environment plus the
//! allow-list, its own process group, a watchdog that kills the whole group
//! (git and helpers such as `git-remote-https`) at the timeout, stdout read as
//! a stream and stderr kept (bounded) for logs.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use crate::error::{GitError, Reason, Stderr};
use crate::policy::{self, Policy, Remote};

/// stderr bytes kept while the rest is drained (git must never block on it).
const STDERR_READ: u64 = 64 << 10;

/// Output of the small commands (`rev-parse`, `config`, `init`).
pub(crate) const SMALL_OUTPUT: u64 = 1 << 20;

/// One git command line.
pub(crate) struct Invocation<'a> {
    pub policy: &'a Policy,
    /// The repository; also the working directory (`--git-dir=.`), so nothing
    /// is looked up from wherever the worker happens to run.
    pub git_dir: &'a Path,
    /// Only fetches talk to a remote.
    pub remote: Option<&'a Remote>,
    /// Subcommand name for errors and logs.
    pub command: &'static str,
    pub args: Vec<OsString>,
}

impl Invocation<'_> {
    fn build(&self, with_stdin: bool) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .envs(policy::environment(self.policy, self.remote))
            .current_dir(self.git_dir)
            .arg("--git-dir=.")
            .args(&self.args)
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so the watchdog can kill git's helpers with it.
            .process_group(0);
        cmd
    }

    /// Values masked out of stderr.
    fn secrets(&self) -> Vec<&str> {
        let header = self
            .remote
            .and_then(|r| r.auth.as_ref())
            .map(|a| a.expose());
        header
            .into_iter()
            .flat_map(|h| [h, h.rsplit(' ').next().unwrap_or(h)])
            .collect()
    }
}

/// Runs the command and returns stdout, at most `max` bytes.
pub(crate) fn output(inv: &Invocation<'_>, max: u64) -> Result<Vec<u8>, GitError> {
    stream(inv, None, |out| {
        let mut buf = Vec::new();
        out.take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| GitError::io(inv.command, e))?;
        if buf.len() as u64 > max {
            return Err(GitError::TooLarge {
                command: inv.command,
                limit: max,
            });
        }
        Ok(buf)
    })
}

/// Runs the command, writing `input` to its stdin, and hands its stdout to
/// `read`. When `read` stops before the end (a cap, or an error), git is
/// stopped rather than drained. A timeout wins over any other result.
pub(crate) fn stream<T>(
    inv: &Invocation<'_>,
    input: Option<Vec<u8>>,
    read: impl FnOnce(&mut BufReader<ChildStdout>) -> Result<T, GitError>,
) -> Result<T, GitError> {
    let io = |e| GitError::io(inv.command, e);
    let mut child = inv.build(input.is_some()).spawn().map_err(io)?;
    let pid = Pid::from_child(&child);
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let outcome = thread::scope(|scope| {
        let watchdog = match Watchdog::arm(scope, pid, inv.policy.timeout) {
            Ok(w) => w,
            Err(e) => {
                kill_group(pid);
                return Err(io(e));
            }
        };
        // Writer and stderr reader on their own threads: git may fill one pipe
        // while we wait on another.
        let writer = match (stdin, input) {
            (Some(mut stdin), Some(bytes)) => Some(spawn(scope, move || {
                // EPIPE when git stops early is expected; git's status says why.
                let _ = stdin.write_all(&bytes);
            })),
            _ => None,
        };
        let stderr = stderr.map(|e| spawn(scope, move || keep_stderr(e)));
        let (result, at_end) = match stdout {
            Some(stdout) => {
                let mut stdout = BufReader::with_capacity(1 << 16, stdout);
                let result = read(&mut stdout);
                let at_end = stdout.fill_buf().is_ok_and(|rest| rest.is_empty());
                (result, at_end)
            }
            None => (Err(io(std::io::ErrorKind::BrokenPipe.into())), false),
        };
        if !at_end {
            kill_group(pid);
        }
        // Exited but not reaped: the group id cannot be reused until the
        // watchdog is disarmed, so its kill can never hit another process.
        wait_exited(pid);
        let fired = watchdog.disarm();
        for thread in writer.into_iter().flatten() {
            let _ = thread.join();
        }
        let stderr = stderr
            .and_then(Result::ok)
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        Ok((result, at_end, fired, stderr))
    });
    let status = child.wait().map_err(io)?;
    let (result, at_end, fired, stderr) = outcome?;
    let stderr = Stderr::clean(&stderr, &inv.secrets());
    if fired {
        return Err(GitError::Timeout {
            command: inv.command,
            after: inv.policy.timeout,
            stderr,
        });
    }
    // A git that was not stopped by us and failed explains the failure better
    // than whatever `read` made of its (short) output.
    if at_end && !status.success() {
        return Err(GitError::Failed {
            command: inv.command,
            reason: Reason::of_stderr(stderr.as_str()),
            stderr,
        });
    }
    result
}

/// Kills after `timeout` unless disarmed first.
struct Watchdog<'scope> {
    cancel: mpsc::Sender<()>,
    thread: thread::ScopedJoinHandle<'scope, bool>,
}

impl<'scope> Watchdog<'scope> {
    fn arm<'env>(
        scope: &'scope thread::Scope<'scope, 'env>,
        pid: Pid,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let (cancel, cancelled) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("git-watchdog".into())
            .spawn_scoped(scope, move || match cancelled.recv_timeout(timeout) {
                Err(RecvTimeoutError::Timeout) => {
                    kill_group(pid);
                    true
                }
                Ok(()) | Err(RecvTimeoutError::Disconnected) => false,
            })?;
        Ok(Watchdog { cancel, thread })
    }

    /// Stops the watchdog; whether it fired.
    fn disarm(self) -> bool {
        drop(self.cancel);
        self.thread.join().unwrap_or(true)
    }
}

fn spawn<'scope, 'env, T: Send + 'scope>(
    scope: &'scope thread::Scope<'scope, 'env>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::io::Result<thread::ScopedJoinHandle<'scope, T>> {
    thread::Builder::new()
        .name("git-pipe".into())
        .spawn_scoped(scope, f)
}

fn kill_group(pid: Pid) {
    // ESRCH (already gone) is fine.
    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
}

/// Blocks until the child has exited, leaving it unreaped (`WNOWAIT`).
fn wait_exited(pid: Pid) {
    loop {
        match rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            _ => return,
        }
    }
}

/// The first [`STDERR_READ`] bytes of stderr; the rest is drained.
fn keep_stderr(stderr: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut stderr = BufReader::new(stderr);
    let _ = (&mut stderr).take(STDERR_READ).read_to_end(&mut kept);
    let _ = std::io::copy(&mut stderr, &mut std::io::sink());
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A git run in `git_dir` without a remote.
    fn invocation<'a>(
        policy: &'a Policy,
        git_dir: &'a Path,
        command: &'static str,
        args: Vec<OsString>,
    ) -> Invocation<'a> {
        Invocation {
            policy,
            git_dir,
            remote: None,
            command,
            args,
        }
    }

    fn config_of(dir: &Path, policy: &Policy, key: &str) -> String {
        let inv = invocation(
            policy,
            dir,
            "config",
            vec!["config".into(), "--get".into(), key.into()],
        );
        String::from_utf8(output(&inv, SMALL_OUTPUT).unwrap())
            .unwrap()
            .trim()
            .to_owned()
    }

    fn bare_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::new(Duration::from_secs(10), false);
        let inv = invocation(
            &policy,
            dir.path(),
            "init",
            vec!["init".into(), "--bare".into(), "-q".into()],
        );
        output(&inv, SMALL_OUTPUT).unwrap();
        dir
    }

    #[test]
    fn the_hardening_config_is_in_effect_in_a_real_git() {
        let dir = bare_repo();
        let policy = Policy::new(Duration::from_secs(10), false);
        // The repository's own config cannot turn hooks back on.
        std::fs::write(
            dir.path().join("config"),
            "[core]\n\tbare = true\n\thooksPath = hooks\n",
        )
        .unwrap();
        assert_eq!(
            config_of(dir.path(), &policy, "core.hooksPath"),
            "/dev/null"
        );
        assert_eq!(
            config_of(dir.path(), &policy, "protocol.file.allow"),
            "never"
        );
        assert_eq!(config_of(dir.path(), &policy, "submodule.recurse"), "false");
    }

    #[test]
    fn git_sees_none_of_the_workers_environment() {
        let dir = bare_repo();
        let policy = Policy::new(Duration::from_secs(10), false);
        // A `!` alias runs a shell with git's environment (test only: the runner
        // never gets aliases from a request).
        let inv = invocation(
            &policy,
            dir.path(),
            "env",
            vec!["-c".into(), "alias.showenv=!env".into(), "showenv".into()],
        );
        let env = String::from_utf8(output(&inv, SMALL_OUTPUT).unwrap()).unwrap();
        assert!(env.contains("HOME=/nonexistent\n"), "{env}");
        assert!(env.contains("GIT_CONFIG_GLOBAL=/dev/null\n"), "{env}");
        // Only the allow-list, what git adds (GIT_DIR, GIT_EXEC_PATH, ...) and
        // what the shell adds: none of cargo's variables this test runs with.
        let names = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, _)| k);
        for name in names {
            let ok = [
                "PATH",
                "HOME",
                "LANG",
                "LC_ALL",
                "SSH_ASKPASS",
                "PWD",
                "SHLVL",
                "_",
            ]
            .contains(&name)
                || name.starts_with("GIT_");
            assert!(ok, "{name} reached git: {env}");
        }
    }

    #[test]
    fn a_failure_is_classified_and_its_stderr_kept_apart() {
        let dir = bare_repo();
        let policy = Policy::new(Duration::from_secs(10), false);
        let inv = invocation(
            &policy,
            dir.path(),
            "rev-parse",
            vec!["rev-parse".into(), "--verify".into(), "nope".into()],
        );
        let error = output(&inv, SMALL_OUTPUT).unwrap_err();
        assert_eq!(error.reason(), Reason::NotFound);
        assert!(error.stderr().is_some_and(|s| s.contains("fatal")));
        assert!(!error.to_string().contains("fatal"));
    }
}
