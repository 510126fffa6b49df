//! Secret filtering: every text that leaves codemap (and generated files, and the
//! operator console) passes through [`redact`].
//!
//! Secrets are replaced by `[REDACTED:<kind>]` followed by as many newlines as the
//! secret spanned, so line numbers of the rest of the file stay exact. Only counts
//! per kind are kept, never values.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// Counts of redactions by kind (`aws_access_key`, `github_token`, ...).
pub type RedactionCounts = BTreeMap<String, usize>;

/// Bumped whenever the rules change: stored whole-repository maps take a file
/// without redactions verbatim from its blob, so they must not outlive the rules.
/// 2: placeholders narrowed to template references, masks and documented
/// example keys; hyphenated key names (`X-Api-Key`).
pub const REDACTION_VERSION: u32 = 2;

/// Marker prefix of every replacement; counting markers in an output gives its redactions.
pub const MARKER_PREFIX: &str = "[REDACTED:";

// One alternation scanned in a single pass: the regex engine's lazy DFA keeps this
// close to memchr speed on files without secrets, which is almost every file.
static SECRET_RE: LazyLock<Regex> = LazyLock::new(|| {
    let parts = [
        r"(?P<private_key>-----BEGIN[A-Z ]* PRIVATE KEY( BLOCK)?-----(?s:.*?)(?:-----END[A-Z ]* PRIVATE KEY( BLOCK)?-----|\z))",
        r"(?P<aws_access_key>\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA)[0-9A-Z]{16}\b)",
        r"(?P<gcp_api_key>\bAIza[0-9A-Za-z_\-]{35})",
        r"(?P<github_token>\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}))",
        r"(?P<slack_token>\bxox[baprs]-[A-Za-z0-9\-]{10,})",
        r"(?P<anthropic_key>\bsk-ant-[A-Za-z0-9_\-]{16,})",
        r"(?P<openai_key>\bsk-(?:proj-|or-v1-|or-|live-|test-)?[A-Za-z0-9_\-]{20,})",
        r"(?P<linear_key>\blin_(?:api|oauth)_[A-Za-z0-9]{20,})",
        r"(?P<azure_key>(?i:AccountKey|SharedAccessKey|azure[_a-z]*key)[ \t]*[=:][ \t]*['\x22]?(?P<azure_val>[A-Za-z0-9+/=]{30,}))",
        r"(?P<connection_string>\b[a-zA-Z][a-zA-Z0-9+.\-]+://[^:/\s@'\x22]+:(?P<conn_pw>[^@\s'\x22/]+)@)",
        // KEY=value / key: "value" where the name says secret; value must be a literal.
        r"(?P<secret_assignment>(?i:secret|token|passwd|password|pwd|api[_\-]?key|access[_\-]?key|private[_\-]?key|credentials?|auth[_\-]key|client[_\-]key)[A-Za-z0-9_\-]*['\x22]?[ \t]*(?::=|=|:)[ \t]*(?:(?P<sa_q>['\x22`])(?P<sa_qval>[^'\x22`\n]{4,})['\x22`]|(?P<sa_bare>[^\s'\x22`,;(){}\[\]$<>]{8,})[ \t]*$))",
        r"(?P<high_entropy>[=:][ \t]*['\x22`](?P<he_val>[A-Za-z0-9+/=_\-]{20,})['\x22`])",
    ];
    // ASCII word boundaries: a Unicode `\b` makes the DFA give up on non-ASCII
    // text and fall back to the much slower PikeVM.
    let pattern = format!("(?m){}", parts.join("|")).replace(r"\b", r"(?-u:\b)");
    // A larger lazy-DFA cache: with the default the cache is rebuilt over and over
    // on big files, which showed up as a quarter of analysis time.
    regex::RegexBuilder::new(&pattern)
        .dfa_size_limit(32 << 20)
        .build()
        .unwrap_or_else(|e| panic!("secret regex must compile: {e}"))
});

const KINDS: &[&str] = &[
    "private_key",
    "aws_access_key",
    "gcp_api_key",
    "github_token",
    "slack_token",
    "anthropic_key",
    "openai_key",
    "linear_key",
    "azure_key",
    "connection_string",
    "secret_assignment",
    "high_entropy",
];

/// Replaces every secret in `text`, adding what was removed to `counts`.
///
/// Returns the input unchanged (borrowed) when nothing matched.
pub fn redact<'a>(text: &'a str, counts: &mut RedactionCounts) -> Cow<'a, str> {
    SECRET_RE.replace_all(text, |caps: &Captures<'_>| replace_one(caps, counts))
}

/// Redacts an owned string, returning it untouched when clean.
pub fn redact_string(text: String, counts: &mut RedactionCounts) -> String {
    match redact(&text, counts) {
        Cow::Borrowed(_) => text,
        Cow::Owned(s) => s,
    }
}

/// Counts `[REDACTED:kind]` markers in an already-redacted text.
pub fn count_markers(text: &str, counts: &mut RedactionCounts) {
    for (i, _) in text.match_indices(MARKER_PREFIX) {
        let rest = &text[i + MARKER_PREFIX.len()..];
        if let Some(end) = rest.find(']') {
            let kind = &rest[..end];
            if KINDS.contains(&kind) {
                *counts.entry(kind.to_owned()).or_default() += 1;
            }
        }
    }
}

fn replace_one(caps: &Captures<'_>, counts: &mut RedactionCounts) -> String {
    let whole = caps.get(0).map_or("", |m| m.as_str());
    let Some(kind) = KINDS.iter().copied().find(|k| caps.name(k).is_some()) else {
        return whole.to_owned();
    };
    // For assignments only the value goes; the name stays so the code still reads.
    let value = match kind {
        "azure_key" => caps.name("azure_val"),
        "connection_string" => caps.name("conn_pw"),
        "secret_assignment" => caps.name("sa_qval").or_else(|| caps.name("sa_bare")),
        "high_entropy" => caps.name("he_val"),
        _ => None,
    };
    if is_documented_example(value.map_or(whole, |v| v.as_str())) {
        return whole.to_owned();
    }
    if let Some(v) = value {
        let val = v.as_str();
        let keep = match kind {
            "secret_assignment" => {
                is_placeholder(val)
                    || is_not_a_value(val)
                    || (caps.name("sa_bare").is_some() && is_code_reference(val))
            }
            "high_entropy" => !looks_random(val) || is_placeholder(val),
            "connection_string" => is_placeholder(val),
            _ => false,
        };
        if keep {
            return whole.to_owned();
        }
        // A known token inside an assignment is counted under its own kind.
        let kind = specific_kind(val).unwrap_or(kind);
        *counts.entry(kind.to_owned()).or_default() += 1;
        let start = v.start() - caps.get(0).map_or(0, |m| m.start());
        let end = start + val.len();
        return format!("{}{}{}", &whole[..start], marker(kind, val), &whole[end..]);
    }
    *counts.entry(kind.to_owned()).or_default() += 1;
    marker(kind, whole)
}

fn specific_kind(val: &str) -> Option<&'static str> {
    let caps = SECRET_RE.captures(val)?;
    KINDS
        .iter()
        .copied()
        .filter(|k| {
            !matches!(
                *k,
                "secret_assignment" | "high_entropy" | "azure_key" | "connection_string"
            )
        })
        .find(|k| caps.name(k).is_some())
}

/// The replacement keeps the number of lines of the secret.
fn marker(kind: &str, secret: &str) -> String {
    let newlines = secret.bytes().filter(|b| *b == b'\n').count();
    format!("{MARKER_PREFIX}{kind}]{}", "\n".repeat(newlines))
}

// Template references: shell and compose `${VAR}`, GitHub Actions `${{ … }}`,
// Jinja, Handlebars and Helm `{{ … }}`, `<your-key>`, Python `%(name)s` and
// `{name}`, `$VAR`, Windows `%VAR%`, Ruby `#{…}`. A shell default
// (`${VAR:-value}`) is not a reference: its default may be the secret.
static REFERENCE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\$\{\{[^{}]*\}\}|\$\{[A-Za-z_][A-Za-z0-9_.]*\}|\{\{[^{}]*\}\}|<[^<>]+>|%\([A-Za-z_][A-Za-z0-9_]*\)s|\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*|%[A-Za-z_][A-Za-z0-9_]*%|#\{[^{}]*\}",
    )
    .unwrap_or_else(|e| panic!("reference regex must compile: {e}"))
});

/// Keys published in vendors' documentation as examples, matched exactly: a
/// value that merely contains "example" (or "test", "dummy") is still redacted.
const DOCUMENTED_EXAMPLES: &[&str] = &[
    // AWS (IAM user guide, CLI configuration docs).
    "AKIAIOSFODNN7EXAMPLE",
    "AKIAI44QH8DHBEXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    // Azurite / the Azure storage emulator's well-known account key.
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
];

/// Characters a masked value repeats (`****`, `xxxx`, `••••`).
const MASK_CHARS: &[char] = &['*', 'x', 'X', '#', '.', '•', '-', '_'];

fn is_documented_example(v: &str) -> bool {
    DOCUMENTED_EXAMPLES.contains(&v)
}

/// Values that stand for a secret without being one: a template reference (only
/// references and separators), an all-mask value, a documented example key, or
/// one of our own markers (so redacting twice changes nothing).
fn is_placeholder(v: &str) -> bool {
    let v = v.trim();
    if v.is_empty() || is_documented_example(v) || is_marker(v) {
        return true;
    }
    let mut chars = v.chars();
    if let Some(first) = chars.next()
        && MASK_CHARS.contains(&first)
        && chars.all(|c| c == first)
    {
        return true;
    }
    REFERENCE_RE.is_match(v)
        && !REFERENCE_RE
            .replace_all(v, "")
            .chars()
            .any(|c| c.is_ascii_alphanumeric())
}

fn is_marker(v: &str) -> bool {
    v.strip_prefix(MARKER_PREFIX)
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|kind| KINDS.contains(&kind))
}

/// Literals that are no value at all (`"null"`, `"false"`).
fn is_not_a_value(v: &str) -> bool {
    ["none", "null", "nil", "true", "false", "undefined"].contains(&v.to_ascii_lowercase().as_str())
}

/// An unquoted value that is code, not a literal: an attribute path from a
/// configuration or environment object (`self.config.token`,
/// `process.env.TOKEN`). Other dotted values (`hunter2.prod`) stay secrets.
fn is_code_reference(v: &str) -> bool {
    const ROOTS: &[&str] = &[
        "self", "this", "cls", "os", "process", "settings", "config", "cfg", "conf", "env",
        "options", "opts", "params", "props", "app", "ctx", "context",
    ];
    let mut parts = v.split('.');
    let root = parts.next().unwrap_or("");
    let ident = |p: &str| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    ROOTS.contains(&root.to_ascii_lowercase().as_str()) && v.contains('.') && parts.all(ident)
}

/// Shannon entropy and character-class mix of a candidate literal.
fn looks_random(v: &str) -> bool {
    if v.len() < 20 || v.chars().all(|c| c.is_ascii_hexdigit()) && v.len() < 40 {
        return false;
    }
    let has_digit = v.bytes().any(|b| b.is_ascii_digit());
    let has_upper = v.bytes().any(|b| b.is_ascii_uppercase());
    let has_lower = v.bytes().any(|b| b.is_ascii_lowercase());
    if !(has_digit && (has_upper || has_lower)) || (!has_upper && v.contains('_')) {
        // snake_case identifiers and words with a version digit are not keys
        return false;
    }
    shannon_entropy(v) >= 4.0
}

fn shannon_entropy(v: &str) -> f64 {
    let mut freq = [0u32; 256];
    for b in v.bytes() {
        freq[usize::from(b)] += 1;
    }
    let n = v.len() as f64;
    freq.iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether a path names a file that is never read (env files, keys, certificates).
pub fn is_sensitive_path(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    if name.starts_with(".env") || name.starts_with("id_rsa") || name.starts_with("id_dsa") {
        return true;
    }
    if name.starts_with("id_ecdsa") || name.starts_with("id_ed25519") {
        return true;
    }
    const NAMES: &[&str] = &[
        ".netrc",
        ".pgpass",
        ".npmrc",
        ".pypirc",
        "credentials.json",
        // AWS's shared credentials file, git's credential store, basic-auth and
        // Docker registry logins.
        "credentials",
        ".git-credentials",
        ".htpasswd",
        ".dockercfg",
    ];
    const EXTS: &[&str] = &[
        "pem", "key", "p12", "pfx", "crt", "cer", "der", "jks", "keystore", "p8", "ppk", "asc",
        "gpg", "kdbx",
    ];
    NAMES.contains(&name.as_str())
        || name
            .rsplit_once('.')
            .is_some_and(|(_, ext)| EXTS.contains(&ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn red(s: &str) -> (String, RedactionCounts) {
        let mut c = RedactionCounts::new();
        let out = redact(s, &mut c).into_owned();
        (out, c)
    }

    #[test]
    fn known_prefixes_are_redacted_by_kind() {
        let gh = format!("ghp_{}", "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6");
        let (out, c) = red(&format!("let t = {gh};"));
        assert!(!out.contains(&gh), "{out}");
        assert_eq!(c.get("github_token"), Some(&1));
        let aws = format!("AKIA{}", "IOSFODNN7EXAMPLQ");
        let (out, c) = red(&format!("key {aws} end"));
        assert_eq!(out, "key [REDACTED:aws_access_key] end");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn private_key_block_keeps_line_count() {
        let pem = format!(
            "a\n-----BEGIN RSA {}-----\nMIIB\nxyz\n-----END RSA {}-----\nb\n",
            "PRIVATE KEY", "PRIVATE KEY"
        );
        let (out, c) = red(&pem);
        assert_eq!(out.lines().count(), pem.lines().count());
        assert!(!out.contains("MIIB"));
        assert_eq!(c.get("private_key"), Some(&1));
    }

    #[test]
    fn connection_string_loses_only_password() {
        let (out, _) = red("url = postgres://app:hunter2pass@db:5432/x");
        assert_eq!(
            out,
            "url = postgres://app:[REDACTED:connection_string]@db:5432/x"
        );
    }

    #[test]
    fn env_style_and_quoted_assignments_are_redacted() {
        let (out, c) = red("DB_PASSWORD=s3cr3tvalue99\nname = 'ok'\n");
        assert_eq!(
            out,
            "DB_PASSWORD=[REDACTED:secret_assignment]\nname = 'ok'\n"
        );
        assert_eq!(c.get("secret_assignment"), Some(&1));
        let (out, _) = red("api_key = \"abcd1234efgh\"");
        assert!(out.contains("[REDACTED:"), "{out}");
    }

    #[test]
    fn ordinary_code_is_untouched() {
        let code = "token = os.environ[\"TOKEN\"]\npassword = get_password()\nlet name = \"some_long_identifier_name_here\";\nsha = \"0123456789abcdef0123456789abcdef\"\n";
        let (out, c) = red(code);
        assert_eq!(out, code);
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn a_word_like_example_does_not_make_a_value_a_placeholder() {
        for value in [
            "example-prod-Zx81!",
            "test-secret-123",
            "dummy_password_1",
            "changeme",
            "placeholder-Zx81",
            "${DB_PASSWORD:-hunter2prod}",
            "prefix-${DB_PASSWORD}",
        ] {
            let (out, c) = red(&format!("password = \"{value}\""));
            assert!(!out.contains(value), "{value} survived: {out}");
            assert_eq!(c.get("secret_assignment"), Some(&1), "{value}");
        }
    }

    #[test]
    fn template_references_masks_and_documented_examples_are_kept() {
        for line in [
            "password = \"${DB_PASSWORD}\"",
            "password: \"${{ secrets.DB_PASSWORD }}\"",
            "password: \"{{ .Values.db.password }}\"",
            "api_key = \"<your-api-key>\"",
            "password = \"%(db_password)s\"",
            "password = \"{password}\"",
            "token: \"$GITHUB_TOKEN\"",
            "TOKEN=$GITHUB_TOKEN_VALUE",
            "dsn = \"${DB_USER}:${DB_PASSWORD}\"",
            "password = \"********\"",
            "password = \"xxxxxxxx\"",
            "aws_access_key_id = \"AKIAIOSFODNN7EXAMPLE\"",
            "aws_secret_access_key = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"",
            "key AKIAIOSFODNN7EXAMPLE end",
            "password = \"[REDACTED:secret_assignment]\"",
            "self.token = self.config.token",
            "url = postgres://app:${DB_PASSWORD}@db:5432/x",
        ] {
            let (out, c) = red(line);
            assert_eq!(out, line);
            assert!(c.is_empty(), "{line}: {c:?}");
        }
        // Near misses of the documented keys are real keys.
        let (out, _) = red("aws_secret_access_key = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY2\"");
        assert!(out.contains("[REDACTED:"), "{out}");
        let (out, _) = red("DB_PASSWORD=hunter2.prod");
        assert_eq!(out, "DB_PASSWORD=[REDACTED:secret_assignment]");
    }

    #[test]
    fn hyphenated_key_names_are_secret_assignments() {
        // Moved from the generator's own redactor: HTTP header style names.
        let (out, c) = red("headers = {\"X-Api-Key\": \"abcd1234efgh\"}\naccess-key: 'Zx81Qw72'\n");
        assert!(
            !out.contains("abcd1234efgh") && !out.contains("Zx81Qw72"),
            "{out}"
        );
        assert_eq!(c.get("secret_assignment"), Some(&2));
    }

    #[test]
    fn markers_are_counted() {
        let mut c = RedactionCounts::new();
        count_markers(
            "x [REDACTED:slack_token] y [REDACTED:slack_token] [REDACTED:nope]",
            &mut c,
        );
        assert_eq!(c.get("slack_token"), Some(&2));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn sensitive_paths_are_recognised() {
        for p in [
            ".env",
            "config/.env.local",
            "certs/server.pem",
            "id_rsa",
            "a/b.p12",
            "x.key",
            ".aws/credentials",
            ".git-credentials",
            "deploy/.htpasswd",
        ] {
            assert!(is_sensitive_path(p), "{p}");
        }
        for p in [
            "src/env.rs",
            "keyboard.py",
            "src/key_utils.go",
            "src/credentials.rs",
        ] {
            assert!(!is_sensitive_path(p), "{p}");
        }
    }
}
