//! Reading a request's URL into the parts the rules judge: scheme, credentials,
//! host and port, with git's scp-like form read the way git reads it.

use super::allow::normalise_host;
use super::{GIT_SSH_VAR, OutboundGuard, OutboundRefusal, Purpose, RefusalKind, TargetHost};
use std::net::IpAddr;
use url::{Host, Url};

/// The parts of a URL the rules look at, before any resolution.
pub(super) struct Target {
    pub url: Url,
    pub host: TargetHost,
    pub port: u16,
}

impl OutboundGuard {
    /// Scheme and credentials, with git's scp-like form read the way git reads it.
    pub(super) fn parse(&self, raw: &str, purpose: Purpose) -> Result<Target, OutboundRefusal> {
        let raw = raw.trim();
        let scp = match purpose {
            Purpose::Git => scp_to_url(raw),
            Purpose::Callback => None,
        };
        let url = Url::parse(scp.as_deref().unwrap_or(raw)).map_err(|e| OutboundRefusal {
            kind: RefusalKind::Malformed,
            host: None,
            message: format!("{} is not a valid URL: {e}", purpose.label()),
        })?;
        let ssh_ok = purpose == Purpose::Git && self.allow_ssh_git;
        match url.scheme() {
            "https" | "http" => {}
            "ssh" | "git+ssh" | "ssh+git" if ssh_ok => {}
            "ssh" | "git+ssh" | "ssh+git" if purpose == Purpose::Git => {
                return Err(OutboundRefusal {
                    kind: RefusalKind::Scheme,
                    host: host_of(&url),
                    message: format!(
                        "repository URL uses ssh, which is off; set {GIT_SSH_VAR}=1 to allow it, or use https"
                    ),
                });
            }
            other => return Err(scheme_refusal(other, purpose, host_of(&url))),
        }
        self.target(url, purpose)
    }

    /// Credentials, host and port of an accepted-scheme URL.
    pub(super) fn target(&self, url: Url, purpose: Purpose) -> Result<Target, OutboundRefusal> {
        let is_ssh = !matches!(url.scheme(), "http" | "https");
        let malformed = |why: &str| OutboundRefusal {
            kind: RefusalKind::Malformed,
            host: host_of(&url),
            message: format!("{} {why}", purpose.label()),
        };
        if url.password().is_some() || (!url.username().is_empty() && !is_ssh) {
            return Err(OutboundRefusal {
                kind: RefusalKind::Credentials,
                host: host_of(&url),
                message: format!(
                    "{} for host {} carries credentials; credentials never come from a request, the worker supplies its own",
                    purpose.label(),
                    host_of(&url).unwrap_or_default()
                ),
            });
        }
        // ssh would read a leading dash as an option (`-oProxyCommand=...`).
        if url.username().starts_with('-') {
            return Err(malformed("has a user name starting with '-'"));
        }
        let host = match url.host() {
            None => return Err(malformed("has no host")),
            Some(Host::Ipv4(v4)) => TargetHost::Ip(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => TargetHost::Ip(IpAddr::V6(v6)),
            // Non-special schemes (ssh) leave IPv4 literals as opaque names.
            Some(Host::Domain(name)) => match name.parse::<IpAddr>() {
                Ok(ip) => TargetHost::Ip(ip),
                Err(_) if name.starts_with('-') => {
                    return Err(malformed("has a host starting with '-'"));
                }
                Err(_) if name.is_empty() => return Err(malformed("has no host")),
                Err(_) => TargetHost::Name(normalise_host(name)),
            },
        };
        let port = url
            .port_or_known_default()
            .unwrap_or(if is_ssh { 22 } else { 443 });
        Ok(Target { url, host, port })
    }
}

pub(super) fn host_of(url: &Url) -> Option<String> {
    url.host_str().map(str::to_owned)
}

pub(super) fn scheme_refusal(
    scheme: &str,
    purpose: Purpose,
    host: Option<String>,
) -> OutboundRefusal {
    let alternatives = match purpose {
        Purpose::Git => format!("https (or ssh with {GIT_SSH_VAR}=1)"),
        Purpose::Callback => "https".to_owned(),
    };
    OutboundRefusal {
        kind: RefusalKind::Scheme,
        host,
        message: format!(
            "{} scheme {scheme:?} is not allowed; use {alternatives}",
            purpose.label()
        ),
    }
}

/// Git's scp-like syntax `[user@]host:path` (a colon before any slash, no
/// `://`) as an `ssh://` URL, so it is judged the way git will read it.
fn scp_to_url(raw: &str) -> Option<String> {
    if raw.contains("://") {
        return None;
    }
    let (user, rest) = match raw.split_once('@') {
        Some((user, rest)) if !user.contains(['/', ':']) => (Some(user), rest),
        _ => (None, raw),
    };
    let (host, path) = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (inner, after) = bracketed.split_once(']')?;
            (format!("[{inner}]"), after.strip_prefix(':')?)
        }
        None => {
            let (host, path) = rest.split_once(':')?;
            if host.contains('/') {
                return None;
            }
            (host.to_owned(), path)
        }
    };
    if host.is_empty() || path.is_empty() {
        return None;
    }
    let user = user.map(|u| format!("{u}@")).unwrap_or_default();
    let path = path.trim_start_matches('/');
    Some(format!("ssh://{user}{host}/{path}"))
}
