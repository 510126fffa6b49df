//! The outbound URL guard: every URL that comes from a request (a task's git
//! repository, an API callback) passes [`OutboundGuard::check`] before anything
//! connects to it, so a request cannot make a worker reach its own machine, the
//! cluster network or the cloud metadata service (SSRF).
//!
//! Rules:
//! - `https` always; `http` only to a host or address in `CONTEXTEN_OUTBOUND_ALLOW`,
//!   or to loopback while loopback is allowed; `ssh://` and scp-like
//!   `git@host:owner/repo` only for git and only with `CONTEXTEN_GIT_ALLOW_SSH=1`;
//!   every other scheme (`file`, `git://`, `ftp`, `data`, ...) is refused here
//!   (local repositories are a separate, development-only path).
//! - No credentials in the URL (`https://user:pass@host`): they would come from
//!   the requester. Only ssh may name a user (`git@`), never a password.
//! - The host must be public: an IP literal is judged by [`classify_ip`]; a name is
//!   resolved once and refused if ANY answer is refused (a rebinding name that
//!   mixes public and private answers is refused). The answers are returned in
//!   [`CheckedUrl`] so the caller connects to exactly them, never resolving again
//!   ([`CheckedUrl::git_pin`] for git, [`GuardedClient`] for reqwest).
//! - Exceptions: an address inside an allow-listed block, any address of an
//!   allow-listed name, and loopback while loopback is allowed.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `CONTEXTEN_OUTBOUND_ALLOW` | comma-separated host names (`git.corp.example`), `*.domain` (any subdomain), IP addresses and CIDR blocks (`10.1.0.0/16`, `fd00::/8`) that request URLs may reach although private or loopback, also over http | unset |
//! | `CONTEXTEN_ALLOW_LOCAL_REPOS` | development switch; here it allows loopback (`127.0.0.0/8`, `::1`, `localhost`) | `0` |
//! | `CONTEXTEN_GIT_ALLOW_SSH` | accept `ssh://` and `git@host:path` repository URLs | `0` |

mod allow;
mod http;
mod ip;
mod parse;

pub use allow::{AllowList, OutboundConfigError};
pub use http::{GuardResolver, GuardedClient, GuardedError, MAX_REDIRECTS};
pub use ip::{Cidr, IpCategory, IpRefusal, classify_ip};

use allow::normalise_host;
use contexten_config::Env;
use parse::{host_of, scheme_refusal};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use url::Url;

/// The allow-list variable.
pub const ALLOW_VAR: &str = "CONTEXTEN_OUTBOUND_ALLOW";
/// The development switch that also allows loopback.
pub const LOCAL_REPOS_VAR: &str = "CONTEXTEN_ALLOW_LOCAL_REPOS";
/// The switch that allows ssh for git.
pub const GIT_SSH_VAR: &str = "CONTEXTEN_GIT_ALLOW_SSH";

/// What a URL is for: ssh is only ever for git.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Git,
    Callback,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Git => "repository URL",
            Purpose::Callback => "callback URL",
        }
    }
}

/// What kind of refusal, for callers that act on it (retry a DNS failure,
/// dead-letter the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not a URL, no host, or a host/user that would be read as an option.
    Malformed,
    /// A scheme that is not allowed for this purpose or host.
    Scheme,
    /// User name or password in the URL.
    Credentials,
    /// The host is or resolves to a refused address.
    Address(IpRefusal),
    /// The name did not resolve (possibly transient).
    Unresolved,
}

/// Why a URL may not be reached, as a stable reason code and a sentence naming
/// the host and the rule (never the URL's path or query, which may hold secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OutboundRefusal {
    pub kind: RefusalKind,
    /// The host as written in the URL, when there was one.
    pub host: Option<String>,
    pub message: String,
}

impl OutboundRefusal {
    /// The stable snake_case code for dead-letter reasons and API errors.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            RefusalKind::Unresolved => "outbound_unresolved",
            _ => "outbound_refused",
        }
    }

    /// Whether trying again later may succeed (only a failed DNS lookup).
    pub fn is_transient(&self) -> bool {
        self.kind == RefusalKind::Unresolved
    }
}

/// The host of a URL: an address literal is judged as is, a name is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Ip(ip) => ip.fmt(f),
            TargetHost::Name(name) => f.write_str(name),
        }
    }
}

/// A URL that passed the guard, with the addresses to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUrl {
    /// The parsed URL; an scp-like git URL appears in its `ssh://` form.
    pub url: Url,
    /// The input as given: hand this to git, which reads scp-like paths
    /// relative to the user's home where `ssh://` paths are absolute.
    pub original: String,
    pub host: TargetHost,
    pub port: u16,
    /// Every address the host resolved to, all checked; connect only to these.
    pub addrs: Vec<SocketAddr>,
    pub purpose: Purpose,
}

impl CheckedUrl {
    /// The pin for git's `http.curloptResolve` (host, port, the checked
    /// addresses), so curl connects to them instead of resolving the name
    /// again (`contexten_git::Resolve` turns it into curl's form). `None` for
    /// an IP literal (nothing to resolve) and for ssh (not curl). Pair it with
    /// `http.followRedirects=false`: a redirect to another host is not pinned.
    pub fn git_pin(&self) -> Option<(&str, u16, Vec<IpAddr>)> {
        let TargetHost::Name(name) = &self.host else {
            return None;
        };
        if !matches!(self.url.scheme(), "http" | "https") || self.addrs.is_empty() {
            return None;
        }
        Some((
            name,
            self.port,
            self.addrs.iter().map(SocketAddr::ip).collect(),
        ))
    }
}

/// The guard: the allow-list and the two switches. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundGuard {
    allow: AllowList,
    allow_loopback: bool,
    allow_ssh_git: bool,
}

impl OutboundGuard {
    /// A guard with the given allow-list, loopback and ssh refused.
    pub fn new(allow: AllowList) -> Self {
        OutboundGuard {
            allow,
            ..Self::default()
        }
    }

    /// Allows loopback addresses (development: `CONTEXTEN_ALLOW_LOCAL_REPOS=1`).
    pub fn allow_loopback(mut self, on: bool) -> Self {
        self.allow_loopback = on;
        self
    }

    /// Allows `ssh://` and scp-like URLs for git (`CONTEXTEN_GIT_ALLOW_SSH=1`).
    pub fn allow_ssh_git(mut self, on: bool) -> Self {
        self.allow_ssh_git = on;
        self
    }

    /// Reads `CONTEXTEN_OUTBOUND_ALLOW`, `CONTEXTEN_ALLOW_LOCAL_REPOS` and
    /// `CONTEXTEN_GIT_ALLOW_SSH`; a bad allow-list entry is named in the error.
    pub fn from_env(env: &Env) -> Result<Self, OutboundConfigError> {
        let allow = AllowList::parse(env.raw(ALLOW_VAR).unwrap_or(""))?;
        Ok(OutboundGuard::new(allow)
            .allow_loopback(env.flag(LOCAL_REPOS_VAR, false)?)
            .allow_ssh_git(env.flag(GIT_SSH_VAR, false)?))
    }

    /// Parses and judges `url`, resolving a host name once; the result lists the
    /// addresses the caller must connect to.
    pub async fn check(&self, url: &str, purpose: Purpose) -> Result<CheckedUrl, OutboundRefusal> {
        let target = self.parse(url, purpose)?;
        let ips = match &target.host {
            TargetHost::Ip(ip) => {
                self.judge_ip(*ip, &target.host, purpose)?;
                vec![*ip]
            }
            TargetHost::Name(name) => self.resolve_checked(name, purpose).await?,
        };
        if target.url.scheme() == "http" && !self.http_allowed(&target.host, &ips) {
            return Err(self.http_refusal(&target.host, purpose));
        }
        Ok(CheckedUrl {
            addrs: ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, target.port))
                .collect(),
            original: url.trim().to_owned(),
            url: target.url,
            host: target.host,
            port: target.port,
            purpose,
        })
    }

    /// Resolves `name` and refuses if any answer is refused (an allow-listed name
    /// is trusted whatever it resolves to). Used by [`check`](Self::check) and by
    /// [`GuardResolver`] for every connection reqwest makes.
    pub async fn resolve_checked(
        &self,
        name: &str,
        purpose: Purpose,
    ) -> Result<Vec<IpAddr>, OutboundRefusal> {
        let host = TargetHost::Name(normalise_host(name));
        let unresolved = |detail: String| OutboundRefusal {
            kind: RefusalKind::Unresolved,
            host: Some(name.to_owned()),
            message: format!("{} host {name} does not resolve: {detail}", purpose.label()),
        };
        let answers = tokio::net::lookup_host((name, 0))
            .await
            .map_err(|e| unresolved(e.to_string()))?;
        // getaddrinfo repeats an address per socket type; keep its order (preference).
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in answers.map(|addr| addr.ip()) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            return Err(unresolved("no addresses".into()));
        }
        if !self.allow.allows_host(name) {
            for ip in &ips {
                self.judge_ip(*ip, &host, purpose)?;
            }
        }
        Ok(ips)
    }

    /// Judges a redirect hop before it is followed: scheme (http/https only),
    /// credentials, and the address when the host is a literal (reqwest skips the
    /// resolver for literals). A name's addresses are judged by the resolver; a
    /// plain-http hop to a name must be allow-listed by name (or be `localhost`
    /// while loopback is allowed), because its addresses are not known yet.
    pub fn check_redirect(&self, url: &Url, purpose: Purpose) -> Result<(), OutboundRefusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(scheme_refusal(url.scheme(), purpose, host_of(url)));
        }
        let target = self.target(url.clone(), purpose)?;
        let ips = match &target.host {
            TargetHost::Ip(ip) => {
                self.judge_ip(*ip, &target.host, purpose)?;
                vec![*ip]
            }
            TargetHost::Name(name) => {
                let local =
                    self.allow_loopback && (name == "localhost" || name.ends_with(".localhost"));
                if local {
                    return Ok(());
                }
                Vec::new()
            }
        };
        if target.url.scheme() == "http" && !self.http_allowed(&target.host, &ips) {
            return Err(self.http_refusal(&target.host, purpose));
        }
        Ok(())
    }

    /// The checks that need no DNS: scheme, credentials, an address literal, and
    /// `localhost` names (RFC 6761: always loopback). For an early, clear answer
    /// where a request names a URL (ingest); the connect-time [`check`](Self::check)
    /// still resolves and judges every address.
    pub fn precheck(&self, url: &str, purpose: Purpose) -> Result<(), OutboundRefusal> {
        let target = self.parse(url, purpose)?;
        let ips = match &target.host {
            TargetHost::Ip(ip) => vec![*ip],
            TargetHost::Name(name)
                if (name == "localhost" || name.ends_with(".localhost"))
                    && !self.allow.allows_host(name) =>
            {
                vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)]
            }
            TargetHost::Name(_) => Vec::new(),
        };
        for ip in &ips {
            self.judge_ip(*ip, &target.host, purpose)?;
        }
        if target.url.scheme() == "http" && !self.http_allowed(&target.host, &ips) {
            return Err(self.http_refusal(&target.host, purpose));
        }
        Ok(())
    }

    /// Judges one address with the exceptions applied.
    pub fn judge(&self, ip: IpAddr) -> Result<(), IpRefusal> {
        if self.allow.allows_ip(ip) {
            return Ok(());
        }
        match classify_ip(ip) {
            Err(refusal) if refusal.category == IpCategory::Loopback && self.allow_loopback => {
                Ok(())
            }
            other => other,
        }
    }

    fn judge_ip(
        &self,
        ip: IpAddr,
        host: &TargetHost,
        purpose: Purpose,
    ) -> Result<(), OutboundRefusal> {
        self.judge(ip).map_err(|refusal| {
            let what = match host {
                TargetHost::Ip(_) => format!("is {refusal}"),
                TargetHost::Name(_) => format!("resolves to {ip}, {refusal}"),
            };
            OutboundRefusal {
                kind: RefusalKind::Address(refusal),
                host: Some(host.to_string()),
                message: format!(
                    "{} host {host} {what}; outbound requests only go to public addresses or hosts in {ALLOW_VAR}",
                    purpose.label()
                ),
            }
        })
    }

    /// Plain http only to allow-listed hosts/addresses, or to loopback while
    /// allowed: anything else should use https.
    fn http_allowed(&self, host: &TargetHost, ips: &[IpAddr]) -> bool {
        if let TargetHost::Name(name) = host {
            if self.allow.allows_host(name) {
                return true;
            }
        }
        let local = |ip: &IpAddr| {
            self.allow.allows_ip(*ip)
                || (self.allow_loopback
                    && classify_ip(*ip).is_err_and(|r| r.category == IpCategory::Loopback))
        };
        !ips.is_empty() && ips.iter().all(local)
    }

    fn http_refusal(&self, host: &TargetHost, purpose: Purpose) -> OutboundRefusal {
        OutboundRefusal {
            kind: RefusalKind::Scheme,
            host: Some(host.to_string()),
            message: format!(
                "{} to host {host} uses plain http, which only goes to hosts in {ALLOW_VAR} (or loopback with {LOCAL_REPOS_VAR}=1); use https",
                purpose.label()
            ),
        }
    }
}

#[cfg(test)]
mod tests;
