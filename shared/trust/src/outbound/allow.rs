//! `CONTEXTEN_OUTBOUND_ALLOW`: the operator's exceptions to the public-only rule.

use super::ip::Cidr;
use std::net::IpAddr;
use std::str::FromStr;

/// A malformed outbound setting, naming the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundConfigError {
    #[error(
        "CONTEXTEN_OUTBOUND_ALLOW entry {entry:?} is invalid: {reason} (expected a host name, *.domain, an IP address or a CIDR block such as 10.1.0.0/16)"
    )]
    Entry { entry: String, reason: String },
    #[error(transparent)]
    Setting(#[from] contexten_config::ConfigError),
}

/// Hosts and address blocks that request-supplied URLs may reach although they
/// are private or loopback, and that may be spoken to over plain http.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Exact host names, lowercase, without a trailing dot.
    hosts: Vec<String>,
    /// `*.corp.example` stored as `.corp.example`: any subdomain, not the domain itself.
    suffixes: Vec<String>,
    blocks: Vec<Cidr>,
}

impl AllowList {
    /// Parses the comma-separated list; empty entries are skipped.
    pub fn parse(list: &str) -> Result<AllowList, OutboundConfigError> {
        let mut allow = AllowList::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |reason: String| OutboundConfigError::Entry {
                entry: entry.to_owned(),
                reason,
            };
            if let Some(domain) = entry.strip_prefix("*.") {
                let domain = host_name(domain).map_err(bad)?;
                allow.suffixes.push(format!(".{domain}"));
            } else if let Ok(block) = Cidr::parse(entry) {
                allow.blocks.push(block);
            } else if entry.contains("://") {
                return Err(bad("a host name has no scheme, port, path or user".into()));
            } else if entry.contains('/') || looks_numeric(entry) {
                // Meant as an address: say what is wrong with it.
                return Err(bad(Cidr::parse(entry).err().unwrap_or_default()));
            } else {
                allow.hosts.push(host_name(entry).map_err(bad)?);
            }
        }
        Ok(allow)
    }

    /// Whether the host name is listed, exactly or under a `*.` entry.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalise_host(host);
        self.hosts.contains(&host) || self.suffixes.iter().any(|suffix| host.ends_with(suffix))
    }

    /// Whether the address lies in a listed address or block.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(ip))
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.suffixes.is_empty() && self.blocks.is_empty()
    }
}

impl FromStr for AllowList {
    type Err = OutboundConfigError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        AllowList::parse(list)
    }
}

/// Lowercase and without the trailing dot, so `Git.Corp.Example.` matches `git.corp.example`.
pub(crate) fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn looks_numeric(entry: &str) -> bool {
    entry.contains(':') && !entry.contains('.')
        || entry.chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn host_name(text: &str) -> Result<String, String> {
    let host = normalise_host(text);
    if host.contains(':') || host.contains('/') || host.contains('@') {
        return Err("a host name has no scheme, port, path or user".into());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && !label.starts_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err("not a valid host name".into());
    }
    Ok(host)
}

/// For binaries whose settings errors are [`contexten_config::ConfigError`]s.
impl From<OutboundConfigError> for contexten_config::ConfigError {
    fn from(error: OutboundConfigError) -> Self {
        match error {
            OutboundConfigError::Setting(error) => error,
            OutboundConfigError::Entry { entry, reason } => contexten_config::ConfigError {
                var: super::ALLOW_VAR.into(),
                expected: format!(
                    "host names, *.domain, IP addresses or CIDR blocks; {entry:?}: {reason}"
                ),
                shown: entry,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_hosts_wildcards_addresses_and_blocks() {
        let allow = AllowList::parse(
            " git.corp.example, *.svc.cluster.local ,10.1.0.0/16,127.0.0.1,fd00::/8,,",
        )
        .unwrap();
        assert!(allow.allows_host("git.corp.example"));
        assert!(allow.allows_host("GIT.Corp.Example."));
        assert!(!allow.allows_host("corp.example"));
        assert!(!allow.allows_host("evilgit.corp.example"));
        assert!(allow.allows_host("api.ns.svc.cluster.local"));
        assert!(!allow.allows_host("svc.cluster.local"));
        assert!(!allow.allows_host("xsvc.cluster.local"));
        assert!(allow.allows_ip("10.1.2.3".parse().unwrap()));
        assert!(allow.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(!allow.allows_ip("127.0.0.2".parse().unwrap()));
        assert!(allow.allows_ip("fd12::5".parse().unwrap()));
        assert!(!allow.allows_ip("10.2.0.1".parse().unwrap()));
        assert!(AllowList::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_named_in_the_error() {
        for (entry, hint) in [
            ("10.1.2.3/16", "did you mean 10.1.0.0/16"),
            ("10.0.0.0/40", "0 to 32"),
            ("10.0.0", "not an IP address"),
            ("https://git.corp.example", "no scheme"),
            ("git.corp.example:8443", "no scheme, port"),
            ("*.", "not a valid host name"),
            ("bad host", "not a valid host name"),
            ("-x.example", "not a valid host name"),
        ] {
            let error = AllowList::parse(&format!("ok.example,{entry}"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(&format!("{entry:?}")), "{error}");
            assert!(error.contains(hint), "{entry}: {error}");
        }
    }
}
