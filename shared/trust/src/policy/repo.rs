//! Repository identities and the patterns of the policy file.
//!
//! One repository has many spellings (`acme/api`, `https://github.com/Acme/API.git`,
//! `git@github.com:acme/api.git`); the policy must judge them all alike, so each
//! becomes a [`RepoId`] first: a lowercase host without port or user, and the path
//! without slashes around it or `.git`. GitHub owners and names are
//! case-insensitive, so github.com paths are lowercased too; other hosts keep
//! the path's case.

use std::fmt;
use std::str::FromStr;
use url::Url;

/// The host of a bare `owner/repo`.
pub const GITHUB_HOST: &str = "github.com";

/// A string that does not name a repository, or a pattern that is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a repository: {reason}")]
pub struct RepoIdError {
    pub input: String,
    pub reason: String,
}

/// A repository's identity: `github.com` + `acme/api`, `gitlab.com` + `group/sub/repo`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoId {
    pub host: String,
    pub path: String,
}

impl RepoId {
    /// Normalises any accepted spelling (see the module docs).
    pub fn parse(text: &str) -> Result<RepoId, RepoIdError> {
        let (host, segments) = locate(text)?;
        let fail = |reason: &str| RepoIdError {
            input: text.to_owned(),
            reason: reason.to_owned(),
        };
        if segments.is_empty() {
            return Err(fail("no repository path"));
        }
        if host == GITHUB_HOST && segments.len() != 2 {
            return Err(fail("a GitHub repository is owner/repo"));
        }
        Ok(RepoId {
            host,
            path: segments.join("/"),
        })
    }

    /// A GitHub repository from its owner and name, as webhooks give them.
    pub fn github(owner: &str, name: &str) -> Result<RepoId, RepoIdError> {
        RepoId::parse(&format!("{owner}/{name}"))
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.path)
    }
}

impl FromStr for RepoId {
    type Err = RepoIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RepoId::parse(text)
    }
}

/// A repository pattern of the policy file: `owner/repo`, `owner/*`,
/// `host/path/to/repo`, `host/group/*` (everything below `group`, subgroups
/// included) or `host/*` (the whole host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern {
    host: String,
    /// The exact path, or the prefix that `*` follows (empty: the whole host).
    path: String,
    wildcard: bool,
}

impl RepoPattern {
    /// Parses one pattern; `*` may only be the last segment.
    pub fn parse(text: &str) -> Result<RepoPattern, RepoIdError> {
        let fail = |reason: &str| RepoIdError {
            input: text.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = text.trim();
        let Some(prefix) = trimmed.strip_suffix("/*") else {
            if trimmed.contains('*') {
                return Err(fail("`*` may only be the last segment, as in owner/*"));
            }
            let id = RepoId::parse(trimmed)?;
            return Ok(RepoPattern {
                host: id.host,
                path: id.path,
                wildcard: false,
            });
        };
        if prefix.contains('*') || prefix.is_empty() {
            return Err(fail(
                "`*` may only be the last segment, as in owner/* or host/*",
            ));
        }
        let (host, segments) = if !prefix.contains('/') && is_host(prefix) {
            // `git.corp.example/*`: the whole host.
            (normalise_host(prefix), Vec::new())
        } else {
            locate(prefix)?
        };
        if host == GITHUB_HOST && segments.len() > 1 {
            return Err(fail("a GitHub pattern is owner/repo or owner/*"));
        }
        Ok(RepoPattern {
            host,
            path: segments.join("/"),
            wildcard: true,
        })
    }

    /// Whether `repo` is this repository or lies below the wildcard.
    pub fn matches(&self, repo: &RepoId) -> bool {
        if self.host != repo.host {
            return false;
        }
        if !self.wildcard {
            return self.path == repo.path;
        }
        self.path.is_empty()
            || repo
                .path
                .strip_prefix(&self.path)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl FromStr for RepoPattern {
    type Err = RepoIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RepoPattern::parse(text)
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.wildcard, self.path.is_empty()) {
            (true, true) => write!(f, "{}/*", self.host),
            (true, false) => write!(f, "{}/{}/*", self.host, self.path),
            (false, _) => write!(f, "{}/{}", self.host, self.path),
        }
    }
}

/// Splits any spelling into a normalised host and path segments.
fn locate(text: &str) -> Result<(String, Vec<String>), RepoIdError> {
    let input = text.trim();
    let fail = |reason: &str| RepoIdError {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let (host, path) = if input.contains("://") {
        let url = Url::parse(input).map_err(|e| fail(&e.to_string()))?;
        let host = url.host_str().ok_or_else(|| fail("the URL has no host"))?;
        // The url crate already resolved `.`/`..` segments, as git's curl would.
        (normalise_host(host), url.path().to_owned())
    } else if let Some((host, path)) = scp_like(input) {
        (normalise_host(host), path.to_owned())
    } else {
        match input.split_once('/') {
            Some((first, rest)) if is_host(first) => (normalise_host(first), rest.to_owned()),
            None if is_host(input) => (normalise_host(input), String::new()),
            _ => (GITHUB_HOST.to_owned(), input.to_owned()),
        }
    };
    if host.is_empty() {
        return Err(fail("no host"));
    }
    let host = if host == "www.github.com" {
        GITHUB_HOST.to_owned()
    } else {
        host
    };
    let path = path.trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    let mut segments = Vec::new();
    for segment in path.split('/').filter(|_| !path.is_empty()) {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(fail("empty, `.` or `..` path segment"));
        }
        if segment.contains(|c: char| c == '%' || c == '*' || c == '\\' || c.is_whitespace()) {
            return Err(fail("a path segment holds `%`, `*`, `\\` or a space"));
        }
        segments.push(if host == GITHUB_HOST {
            segment.to_ascii_lowercase()
        } else {
            segment.to_owned()
        });
    }
    Ok((host, segments))
}

/// `[user@]host:path`, git's scp-like form (a colon before any slash).
fn scp_like(input: &str) -> Option<(&str, &str)> {
    let rest = match input.split_once('@') {
        Some((user, rest)) if !user.contains(['/', ':']) => rest,
        _ => input,
    };
    let (host, path) = rest.split_once(':')?;
    (!host.is_empty() && !host.contains('/')).then_some((host, path))
}

/// A first segment that is a host rather than a GitHub owner: owners never
/// contain dots or colons.
fn is_host(segment: &str) -> bool {
    segment.contains(['.', ':'])
}

/// Lowercase, without port, user or trailing dot: the port is a transport
/// detail, the same repository is reached over https and ssh.
fn normalise_host(host: &str) -> String {
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> String {
        RepoId::parse(text).unwrap().to_string()
    }

    #[test]
    fn every_spelling_of_a_github_repository_is_one_identity() {
        for spelling in [
            "acme/api",
            "Acme/API",
            "acme/api.git",
            "/acme/api/",
            "github.com/acme/api",
            "https://github.com/Acme/API.git",
            "https://github.com/acme/api/",
            "https://x-access-token@github.com/acme/api",
            "http://GitHub.com./acme/api",
            "https://www.github.com/acme/api",
            "git@github.com:acme/api.git",
            "github.com:Acme/api",
            "ssh://git@github.com:22/acme/api.git",
        ] {
            assert_eq!(id(spelling), "github.com/acme/api", "{spelling}");
        }
    }

    #[test]
    fn other_hosts_keep_their_path_and_its_case() {
        assert_eq!(
            id("gitlab.com/Group/Sub/Repo.git"),
            "gitlab.com/Group/Sub/Repo"
        );
        assert_eq!(
            id("https://GIT.corp.example:8443/a/b"),
            "git.corp.example/a/b"
        );
        assert_eq!(
            id("git@git.corp.example:team/tool"),
            "git.corp.example/team/tool"
        );
        assert_eq!(
            id("https://gitlab.com/group/../other/repo"),
            "gitlab.com/other/repo"
        );
    }

    #[test]
    fn non_repositories_are_refused_with_a_reason() {
        for (text, reason) in [
            ("acme", "owner/repo"),
            ("acme/api/tree/main", "owner/repo"),
            ("acme//api", "path segment"),
            ("gitlab.com/group/../x", "path segment"),
            ("acme/%61pi", "`%`"),
            ("acme/a*", "`*`"),
            ("gitlab.com", "no repository path"),
            ("file:///x/y", "no host"),
        ] {
            let error = RepoId::parse(text).unwrap_err();
            assert!(error.to_string().contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn patterns_match_exact_owner_and_host_wide() {
        let pattern = |p: &str| RepoPattern::parse(p).unwrap();
        let repo = |r: &str| RepoId::parse(r).unwrap();
        assert!(pattern("acme/api").matches(&repo("https://github.com/ACME/Api.git")));
        assert!(!pattern("acme/api").matches(&repo("acme/api2")));
        assert!(pattern("Acme/*").matches(&repo("acme/anything")));
        assert!(!pattern("acme/*").matches(&repo("acme-evil/api")));
        assert!(!pattern("acme/*").matches(&repo("gitlab.com/acme/api")));
        assert!(pattern("gitlab.com/group/*").matches(&repo("gitlab.com/group/sub/repo")));
        assert!(!pattern("gitlab.com/group/*").matches(&repo("gitlab.com/groupie/repo")));
        assert!(!pattern("gitlab.com/group/*").matches(&repo("gitlab.com/Group/repo")));
        assert!(pattern("git.corp.example/*").matches(&repo("git.corp.example/x/y")));
        assert!(pattern("github.com/*").matches(&repo("anyone/anything")));
        assert!(pattern("https://gitlab.com/group/*").matches(&repo("gitlab.com/group/r")));
        assert_eq!(pattern("acme/*").to_string(), "github.com/acme/*");
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for text in ["*", "*/api", "acme/*/x", "/*", "acme/api/*", "acme/a*"] {
            assert!(RepoPattern::parse(text).is_err(), "{text}");
        }
    }
}
