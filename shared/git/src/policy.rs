//! The policy every git process runs under: its timeout, whether local
//! repositories may be read, and the environment and configuration it gets
//! (built here, in one place, so a test can read it).

use std::ffi::OsString;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;

use crate::error::GitError;

/// Default of [`Policy::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// HOME for git: a path that does not exist, so no `~/.gitconfig`, `~/.netrc`,
/// `~/.ssh/config` or `~/.config/git` of the worker's user is read (Debian's
/// convention for users without a home).
pub const SAFE_HOME: &str = "/nonexistent";

/// Where git is looked up when the worker has no PATH.
const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How git is run; cheap to clone.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The longest any one git process may run before it and its helpers are
    /// killed (also the longest wait for another fetch of the same repository).
    pub timeout: Duration,
    /// Whether local paths and `file://` URLs may be read (`protocol.file.allow`).
    pub allow_local: bool,
    /// PATH given to git, captured once at start.
    path: OsString,
}

impl Policy {
    /// A policy; captures this process's PATH (call at start-up).
    pub fn new(timeout: Duration, allow_local: bool) -> Self {
        Policy {
            timeout,
            allow_local,
            path: std::env::var_os("PATH").unwrap_or_else(|| FALLBACK_PATH.into()),
        }
    }
}

/// An HTTP header sent with a fetch (`http.extraHeader`), such as a token. It
/// reaches git through its environment, never argv, and never shows in `Debug`.
#[derive(Clone)]
pub struct AuthHeader(String);

impl AuthHeader {
    /// The header GitHub accepts for a token over HTTPS.
    pub fn github_token(token: &str) -> Self {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
        AuthHeader(format!("Authorization: Basic {basic}"))
    }

    /// The header line (`Name: value`), to put in git's environment.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthHeader(***)")
    }
}

/// Pins `host:port` to the addresses the caller already checked
/// (`http.curloptResolve`), so git cannot be sent elsewhere by DNS (pair it
/// with the policy's `http.followRedirects=false`: a redirect is not pinned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    host: String,
    port: u16,
    addrs: Vec<IpAddr>,
}

impl Resolve {
    /// A pin; the host must be a plain DNS name, with at least one address.
    pub fn new(
        host: &str,
        port: u16,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Result<Self, GitError> {
        let addrs: Vec<IpAddr> = addrs.into_iter().collect();
        let plain = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !plain || addrs.is_empty() {
            return Err(GitError::RefusedUrl("unpinnable host"));
        }
        Ok(Resolve {
            host: host.to_owned(),
            port,
            addrs,
        })
    }

    /// curl's `HOST:PORT:ADDRESS[,ADDRESS]` form (IPv6 in brackets).
    fn curl_form(&self) -> String {
        let addrs: Vec<String> = self
            .addrs
            .iter()
            .map(|a| match a {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => format!("[{a}]"),
            })
            .collect();
        format!("{}:{}:{}", self.host, self.port, addrs.join(","))
    }
}

/// What one fetch sends beyond the policy.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    /// A header for this remote (the caller decides which hosts get it).
    pub auth: Option<AuthHeader>,
    /// Address pins from the caller's outbound check.
    pub resolve: Vec<Resolve>,
}

/// The configuration every git process gets, as `GIT_CONFIG_KEY_n/VALUE_n`
/// (command-line scope: it beats the repository's own config, and a secret in
/// it is not in argv, which any user can read with `ps`).
pub(crate) fn config(policy: &Policy, remote: Option<&Remote>) -> Vec<(&'static str, String)> {
    let file = if policy.allow_local {
        "always"
    } else {
        "never"
    };
    let mut pairs: Vec<(&'static str, String)> = [
        // No hooks (a fetch runs reference-transaction hooks), no fsmonitor
        // command, no credential helper, no submodules.
        ("core.hooksPath", "/dev/null"),
        ("core.fsmonitor", "false"),
        ("credential.helper", ""),
        ("submodule.recurse", "false"),
        ("fetch.recurseSubmodules", "false"),
        ("http.followRedirects", "false"),
        ("transfer.credentialsInUrl", "die"),
        // Only known transports: everything else (ext::, fd::, remote helpers)
        // is refused, file:// only when local repositories are allowed.
        ("protocol.allow", "never"),
        ("protocol.https.allow", "always"),
        ("protocol.http.allow", "always"),
        ("protocol.ssh.allow", "always"),
        ("protocol.git.allow", "always"),
        ("protocol.file.allow", file),
        ("protocol.ext.allow", "never"),
        // No background work in a cache repository that others read.
        ("gc.auto", "0"),
        ("maintenance.auto", "false"),
        ("fetch.writeCommitGraph", "false"),
        // An empty value resets the list (the repository's config cannot add one).
        ("http.extraHeader", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    if let Some(remote) = remote {
        if let Some(auth) = &remote.auth {
            pairs.push(("http.extraHeader", auth.expose().to_owned()));
        }
        for pin in &remote.resolve {
            pairs.push(("http.curloptResolve", pin.curl_form()));
        }
    }
    pairs
}

/// The whole environment of a git process (it starts from an empty one):
/// nothing of the worker's (API keys, tokens, proxies, `GIT_*`) is inherited.
pub(crate) fn environment(policy: &Policy, remote: Option<&Remote>) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = vec![
        ("PATH".into(), policy.path.clone()),
        ("HOME".into(), SAFE_HOME.into()),
        ("LANG".into(), "C".into()),
        // English messages, so failures can be classified.
        ("LC_ALL".into(), "C".into()),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("GIT_ASKPASS".into(), "false".into()),
        ("SSH_ASKPASS".into(), "false".into()),
        ("GIT_SSH_COMMAND".into(), "ssh -o BatchMode=yes".into()),
        ("GIT_PROTOCOL_FROM_USER".into(), "0".into()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
    ];
    let pairs = config(policy, remote);
    env.push(("GIT_CONFIG_COUNT".into(), pairs.len().to_string().into()));
    for (i, (key, value)) in pairs.into_iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), key.into()));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), value.into()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(env: &'a [(String, OsString)], key: &str) -> Option<&'a str> {
        env.iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.to_str())
    }

    #[test]
    fn the_environment_is_an_allow_list_without_the_workers_secrets() {
        let policy = Policy::new(DEFAULT_TIMEOUT, false);
        let remote = Remote {
            auth: Some(AuthHeader::github_token("ghp_secret")),
            resolve: vec![
                Resolve::new("github.com", 443, ["140.82.112.3".parse().unwrap()]).unwrap(),
            ],
        };
        let env = environment(&policy, Some(&remote));
        for name in env.iter().map(|(k, _)| k.as_str()) {
            let allowed = [
                "PATH",
                "HOME",
                "LANG",
                "LC_ALL",
                "GIT_TERMINAL_PROMPT",
                "GIT_ASKPASS",
                "SSH_ASKPASS",
                "GIT_SSH_COMMAND",
                "GIT_PROTOCOL_FROM_USER",
                "GIT_CONFIG_NOSYSTEM",
                "GIT_CONFIG_GLOBAL",
                "GIT_CONFIG_COUNT",
            ]
            .contains(&name)
                || name.starts_with("GIT_CONFIG_KEY_")
                || name.starts_with("GIT_CONFIG_VALUE_");
            assert!(allowed, "{name} is not on the allow list");
        }
        assert_eq!(value(&env, "HOME"), Some(SAFE_HOME));
        assert_eq!(value(&env, "GIT_CONFIG_GLOBAL"), Some("/dev/null"));
        assert_eq!(value(&env, "GIT_CONFIG_NOSYSTEM"), Some("1"));
        assert_eq!(value(&env, "GIT_TERMINAL_PROMPT"), Some("0"));
        let config = config(&policy, Some(&remote));
        let get = |key: &str| {
            config
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            value(&env, "GIT_CONFIG_COUNT"),
            Some(config.len().to_string().as_str())
        );
        assert_eq!(get("core.hooksPath"), ["/dev/null"]);
        assert_eq!(get("protocol.file.allow"), ["never"]);
        assert_eq!(get("protocol.ext.allow"), ["never"]);
        assert_eq!(get("http.curloptResolve"), ["github.com:443:140.82.112.3"]);
        let headers = get("http.extraHeader");
        assert_eq!(headers[0], "", "the list is reset first");
        assert!(headers[1].starts_with("Authorization: Basic "));
        assert_eq!(format!("{:?}", remote.auth), "Some(AuthHeader(***))");
    }

    #[test]
    fn local_repositories_open_the_file_protocol_only_when_allowed() {
        let open = config(&Policy::new(DEFAULT_TIMEOUT, true), None);
        assert!(open.contains(&("protocol.file.allow", "always".to_owned())));
        assert!(
            !open
                .iter()
                .any(|(k, v)| *k == "http.extraHeader" && !v.is_empty())
        );
    }

    #[test]
    fn pins_are_plain_hosts_in_curls_form() {
        let addrs = ["::1".parse().unwrap(), "192.0.2.1".parse().unwrap()];
        let pin = Resolve::new("example.com", 443, addrs).unwrap();
        assert_eq!(pin.curl_form(), "example.com:443:[::1],192.0.2.1");
        assert!(Resolve::new("a:b", 1, addrs).is_err());
        assert!(Resolve::new("example.com", 443, []).is_err());
    }
}
