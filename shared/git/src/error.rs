//! What can go wrong, as a short stable [`Reason`] a caller may show, and git's
//! own words ([`Stderr`]) kept apart for logs only.

use std::time::Duration;

/// Most of git's stderr kept for a log line (it can quote remote answers).
const STDERR_KEEP: usize = 2000;

/// Why git failed, stable and short enough for a metric label or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A git process ran past the timeout and was killed with its helpers.
    Timeout,
    /// The repository, ref, revision or path does not exist.
    NotFound,
    /// The ref is not a safe ref name; nothing was run.
    RefusedRef,
    /// The URL is malformed, of an unsupported kind, or local while local
    /// repositories are not allowed; nothing was run.
    RefusedUrl,
    /// A path inside the repository is not plain; nothing was run.
    RefusedPath,
    /// The remote wants credentials that were not given or were refused.
    Auth,
    /// Output over a size cap.
    TooLarge,
    /// Anything else.
    Failed,
}

impl Reason {
    /// snake_case name (`timeout`, `not_found`, `refused_ref`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::NotFound => "not_found",
            Self::RefusedRef => "refused_ref",
            Self::RefusedUrl => "refused_url",
            Self::RefusedPath => "refused_path",
            Self::Auth => "auth",
            Self::TooLarge => "too_large",
            Self::Failed => "failed",
        }
    }

    /// Reads a failed git's stderr (run with `LC_ALL=C`, so in English).
    pub(crate) fn of_stderr(stderr: &str) -> Self {
        let s = stderr.to_ascii_lowercase();
        let any = |needles: &[&str]| needles.iter().any(|n| s.contains(n));
        if any(&[
            "authentication failed",
            "could not read username",
            "could not read password",
            "terminal prompts disabled",
            "permission denied",
            "the requested url returned error: 401",
            "the requested url returned error: 403",
        ]) {
            Self::Auth
        } else if any(&[
            "couldn't find remote ref",
            "not found",
            "does not exist",
            "does not appear to be a git repository",
            "unknown revision",
            "needed a single revision",
            "not a valid object name",
            "not a tree object",
            "bad revision",
        ]) {
            Self::NotFound
        } else {
            Self::Failed
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// git's stderr, truncated and with credentials removed: for logs only, never
/// part of an error's `Display` (answers and dead-letter details are built from
/// that, and git quotes remote servers).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Stderr(String);

impl Stderr {
    /// Cleans raw stderr: `secrets` (an auth header and its parts) and URL
    /// user-info are masked, then it is cut to [`STDERR_KEEP`] bytes.
    pub(crate) fn clean(raw: &[u8], secrets: &[&str]) -> Self {
        let mut text = String::from_utf8_lossy(raw).into_owned();
        for secret in secrets.iter().filter(|s| s.len() >= 4) {
            text = text.replace(secret, "***");
        }
        let mut text = mask_userinfo(&text);
        if text.len() > STDERR_KEEP {
            let mut cut = STDERR_KEEP;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Stderr(text.trim().to_owned())
    }

    /// The text, for a log field.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Stderr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

/// `scheme://user:pass@host` → `scheme://***@host`, for every URL in `text`.
fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                rest = &tail[user_end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// A git operation that did not succeed. The `Display` form is short and never
/// includes git's output; [`GitError::stderr`] has that, for logs.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The ref failed the ref-name rules; no git process ran.
    #[error("ref {0:?} is not a safe git ref name")]
    RefusedRef(String),
    /// The URL was refused before any git process ran.
    #[error("repository URL refused: {0}")]
    RefusedUrl(&'static str),
    /// A path inside the repository was refused before any git process ran.
    #[error("path {0:?} is not a plain repository path")]
    RefusedPath(String),
    /// A git process (or the wait for another fetch of the same repository)
    /// ran past the timeout; the process group was killed.
    #[error("git {command} timed out after {}s", .after.as_secs())]
    Timeout {
        /// The git subcommand.
        command: &'static str,
        /// The timeout.
        after: Duration,
        /// What git said before it was killed.
        stderr: Stderr,
    },
    /// Output over a cap; the process was stopped.
    #[error("git {command} output is over its limit of {limit} bytes")]
    TooLarge {
        /// The git subcommand.
        command: &'static str,
        /// The cap.
        limit: u64,
    },
    /// git exited with an error.
    #[error("git {command} failed: {reason}")]
    Failed {
        /// The git subcommand.
        command: &'static str,
        /// What kind of failure, read from stderr.
        reason: Reason,
        /// What git said (logs only).
        stderr: Stderr,
    },
    /// git could not be started or talked to, or the cache folder not written.
    #[error("git {command}: i/o error")]
    Io {
        /// The git subcommand (or `cache` for the folder).
        command: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl GitError {
    /// The stable reason.
    pub fn reason(&self) -> Reason {
        match self {
            Self::RefusedRef(_) => Reason::RefusedRef,
            Self::RefusedUrl(_) => Reason::RefusedUrl,
            Self::RefusedPath(_) => Reason::RefusedPath,
            Self::Timeout { .. } => Reason::Timeout,
            Self::TooLarge { .. } => Reason::TooLarge,
            Self::Failed { reason, .. } => *reason,
            Self::Io { .. } => Reason::Failed,
        }
    }

    /// git's (truncated, credential-free) stderr, for logs only.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Self::Timeout { stderr, .. } | Self::Failed { stderr, .. } => Some(stderr.as_str()),
            _ => None,
        }
    }

    pub(crate) fn io(command: &'static str, source: std::io::Error) -> Self {
        Self::Io { command, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_loses_secrets_and_userinfo_and_stays_short() {
        let raw = "fatal: unable to access 'https://x-access-token:ghp_abc@github.com/o/r/': \
                   header Authorization: Basic c2VjcmV0 refused\n"
            .repeat(100);
        let clean = Stderr::clean(raw.as_bytes(), &["Authorization: Basic c2VjcmV0"]);
        assert!(!clean.as_str().contains("ghp_abc"), "{clean:?}");
        assert!(!clean.as_str().contains("c2VjcmV0"), "{clean:?}");
        assert!(clean.as_str().contains("https://***@github.com/o/r/"));
        assert!(clean.as_str().len() <= STDERR_KEEP);
    }

    #[test]
    fn the_display_form_never_carries_stderr() {
        let error = GitError::Failed {
            command: "fetch",
            reason: Reason::of_stderr("fatal: couldn't find remote ref nope"),
            stderr: Stderr::clean(b"fatal: couldn't find remote ref nope", &[]),
        };
        assert_eq!(error.to_string(), "git fetch failed: not_found");
        assert_eq!(error.stderr(), Some("fatal: couldn't find remote ref nope"));
        let timeout = GitError::Timeout {
            command: "fetch",
            after: Duration::from_secs(2),
            stderr: Stderr::clean(b"remote: secret plans", &[]),
        };
        assert_eq!(timeout.to_string(), "git fetch timed out after 2s");
        assert_eq!(timeout.reason().as_str(), "timeout");
    }

    #[test]
    fn stderr_is_classified() {
        for (text, reason) in [
            (
                "fatal: could not read Username for 'https://github.com': terminal prompts disabled",
                Reason::Auth,
            ),
            (
                "remote: Repository not found.\nfatal: repository 'x' not found",
                Reason::NotFound,
            ),
            ("fatal: Needed a single revision", Reason::NotFound),
            ("fatal: the remote end hung up unexpectedly", Reason::Failed),
        ] {
            assert_eq!(Reason::of_stderr(text), reason, "{text}");
        }
    }
}
