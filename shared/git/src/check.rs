//! Inputs checked before any git process runs: refs against git's ref-name rules
//! (`git check-ref-format --allow-onelevel`, plus no leading `-` or `+`), URLs by
//! kind, paths inside a repository.

use std::path::PathBuf;

use crate::error::GitError;

/// Longest ref accepted (git has no limit; a request has no use for more).
const MAX_REF_LEN: usize = 255;
/// Longest URL accepted.
const MAX_URL_LEN: usize = 2048;

/// Checks a branch, tag, full ref, `HEAD` or commit id. A leading `-` (an option
/// to git) or `+` (a forced refspec) is refused, and so is everything
/// `git check-ref-format` refuses.
pub fn check_ref(reference: &str) -> Result<&str, GitError> {
    if is_safe_ref(reference) {
        Ok(reference)
    } else {
        Err(GitError::RefusedRef(
            reference.chars().take(100).collect::<String>(),
        ))
    }
}

fn is_safe_ref(r: &str) -> bool {
    let bad_char = |c: char| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    };
    !r.is_empty()
        && r.len() <= MAX_REF_LEN
        && r != "@"
        && !r.starts_with(['-', '+', '/'])
        && !r.ends_with(['/', '.'])
        && !r.contains("..")
        && !r.contains("@{")
        && !r.contains("//")
        && !r.chars().any(bad_char)
        && r.split('/')
            .all(|part| !part.starts_with('.') && !part.ends_with(".lock"))
}

/// What a repository URL points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlKind {
    /// A path on this machine (a plain path or `file://`).
    Local(PathBuf),
    /// `https`, `http`, `ssh`, `git` or scp-like `user@host:path`.
    Remote,
}

/// Classifies a repository URL, refusing option-like, control-character,
/// transport-helper (`ext::…`) and unknown-scheme URLs.
pub fn classify_url(url: &str) -> Result<UrlKind, GitError> {
    if url.is_empty() || url.len() > MAX_URL_LEN {
        return Err(GitError::RefusedUrl("empty or too long"));
    }
    if url.starts_with('-') || url.chars().any(|c| c.is_ascii_control()) {
        return Err(GitError::RefusedUrl("malformed"));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        return match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(UrlKind::Local(PathBuf::from(rest))),
            "https" | "http" | "ssh" | "git" if !rest.is_empty() => Ok(UrlKind::Remote),
            _ => Err(GitError::RefusedUrl("unsupported scheme")),
        };
    }
    // `<helper>::<address>` runs git-remote-<helper> (ext:: runs a shell command).
    if url.contains("::") {
        return Err(GitError::RefusedUrl("transport helpers are not allowed"));
    }
    // scp-like `[user@]host:path` is ssh when the colon comes before any slash
    // (git's own rule).
    match (url.find(':'), url.find('/')) {
        (Some(colon), slash) if slash.is_none_or(|s| colon < s) => Ok(UrlKind::Remote),
        _ => Ok(UrlKind::Local(PathBuf::from(url))),
    }
}

/// Checks a repository-relative path given to git (`<rev>:<path>`): plain
/// components only, nothing that would break `cat-file --batch`'s lines. `.`
/// components are dropped (git reads `<rev>:./x` relative to its working
/// directory).
pub fn check_path(path: &str) -> Result<String, GitError> {
    let refused = || GitError::RefusedPath(path.chars().take(100).collect());
    if path.starts_with(['/', '-']) || path.chars().any(|c| c.is_ascii_control()) {
        return Err(refused());
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "." => {}
            "" | ".." => return Err(refused()),
            plain => parts.push(plain),
        }
    }
    if parts.is_empty() {
        return Err(refused());
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_follow_check_ref_format() {
        for good in [
            "main",
            "HEAD",
            "feature/x-1",
            "refs/pull/12/head",
            "v1.2.3",
            "0123456789abcdef0123456789abcdef01234567",
            &"a".repeat(64),
        ] {
            assert!(check_ref(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "-x",
            "--upload-pack=touch /tmp/x",
            "+main",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "a@{1}",
            "@",
            "x.lock",
            "a/x.lock/b",
            "a/",
            "/a",
            "a//b",
            "a.",
            ".a",
            "a/.b",
            "a\nb",
            "a\tb",
            "a\u{7f}",
            &"a".repeat(300),
        ] {
            assert!(
                matches!(check_ref(bad), Err(GitError::RefusedRef(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn urls_are_classified_or_refused() {
        let local = |p: &str| Some(UrlKind::Local(PathBuf::from(p)));
        assert_eq!(classify_url("file:///tmp/r").ok(), local("/tmp/r"));
        assert_eq!(classify_url("/tmp/r").ok(), local("/tmp/r"));
        assert_eq!(classify_url("./r").ok(), local("./r"));
        for remote in [
            "https://github.com/a/b.git",
            "http://127.0.0.1:9/r.git",
            "ssh://git@host/r",
            "git://host/r",
            "git@github.com:a/b.git",
        ] {
            assert_eq!(classify_url(remote).ok(), Some(UrlKind::Remote), "{remote}");
        }
        for bad in [
            "",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/x",
            "fd::17",
            "ftp://example.com/r",
            "https://",
            "https://host/r\nx",
        ] {
            assert!(
                matches!(classify_url(bad), Err(GitError::RefusedUrl(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn paths_are_plain() {
        assert_eq!(check_path("src/lib.rs").unwrap(), "src/lib.rs");
        assert_eq!(check_path("./src/./lib.rs").unwrap(), "src/lib.rs");
        for bad in [
            "",
            ".",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "-x",
            "a\nb",
            "a//b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }
}
