//! A last line of defence for code the generator reads itself (the target file,
//! usage snippets): well-known secret shapes are replaced by `[REDACTED]` before
//! anything reaches a prompt or a cache. The context worker's prompt arrives
//! already filtered by codemap; this covers what it did not assemble.

use regex::Regex;
use std::sync::LazyLock;

/// The marker left where a secret was.
pub const MARKER: &str = "[REDACTED]";

struct Rule {
    pattern: Regex,
    /// Capture group holding the secret (0 = the whole match).
    group: usize,
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |pattern: &str, group: usize| Rule {
        // The patterns are constants checked by the tests below.
        pattern: Regex::new(pattern).unwrap_or_else(|e| panic!("bad redaction pattern: {e}")),
        group,
    };
    vec![
        rule(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
            0,
        ),
        rule(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", 0),
        rule(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b", 0),
        rule(r"\bgithub_pat_[A-Za-z0-9_]{20,}\b", 0),
        rule(r"\bxox[abprs]-[A-Za-z0-9-]{10,}", 0),
        rule(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}", 0),
        rule(r"\blin_(?:api|oauth)_[A-Za-z0-9]{20,}\b", 0),
        // user:password@ in connection strings: only the password goes.
        rule(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:([^@\s/]{3,})@", 1),
        // password = "…", api_key: '…', TOKEN="…"
        rule(
            r#"(?i)\b[A-Za-z0-9_]*(?:password|passwd|secret|api[_-]?key|token|access[_-]?key|private[_-]?key)[A-Za-z0-9_]*\b["']?\s*[:=]\s*["']([^"'\n]{6,})["']"#,
            1,
        ),
    ]
});

/// `text` with every recognised secret replaced by [`MARKER`].
pub fn redact(text: &str) -> String {
    let mut out = text.to_owned();
    for rule in RULES.iter() {
        if !rule.pattern.is_match(&out) {
            continue;
        }
        let mut result = String::with_capacity(out.len());
        let mut last = 0;
        for captures in rule.pattern.captures_iter(&out) {
            let Some(secret) = captures.get(rule.group) else {
                continue;
            };
            result.push_str(&out[last..secret.start()]);
            result.push_str(MARKER);
            last = secret.end();
        }
        result.push_str(&out[last..]);
        out = result;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_secret_shapes_are_removed_and_code_kept() {
        let aws = ["AKIA", "ABCDEFGHIJKLMNOP"].concat();
        let gh = ["ghp_", &"a1".repeat(18)].concat();
        let sk = ["sk-", "proj-", &"Zz9".repeat(8)].concat();
        let pem = [
            "-----BEGIN RSA PRIVATE KEY-----\n",
            "MIIEowIBAAKCAQEA\n",
            "-----END RSA PRIVATE KEY-----",
        ]
        .concat();
        let text = format!(
            "AWS = '{aws}'\nclient = Github('{gh}')\nopenai.key = \"{sk}\"\n{pem}\nDB = 'postgres://app:{pw}@db/x'\nDB_PASSWORD = \"{pw}\"\ndef keep_me(): pass\n",
            pw = ["hunter", "2-long"].concat()
        );
        let clean = redact(&text);
        for secret in [
            aws.as_str(),
            gh.as_str(),
            sk.as_str(),
            "MIIEowIBAAKCAQEA",
            "hunter2-long",
        ] {
            assert!(!clean.contains(secret), "{secret} survived:\n{clean}");
        }
        assert!(clean.contains("def keep_me(): pass"));
        assert!(clean.contains("DB_PASSWORD = \"[REDACTED]\""));
        assert!(clean.contains("postgres://app:[REDACTED]@db/x"));
    }
}
