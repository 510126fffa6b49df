//! Fake keys of every kind never appear in any output. The keys are assembled
//! from pieces so this file never holds a realistic secret in clear.

use contexten_codemap::{Hints, Query, assemble_prompt};

use crate::helpers::{analyse, write_repo};

fn fake_keys() -> Vec<(&'static str, String)> {
    let body36 = ["aB3dE6gH9j", "K2mN5pQ8sT", "1vW4yZ7bC0", "eF3hJ6"].concat();
    vec![
        ("aws_access_key", ["AK", "IA", "QWERTYUIOPASDFGH"].concat()),
        (
            "aws_secret",
            ["wJalrXUtnFEMI", "/K7MDENG/bPxRfiCY", "Zq9rT2uV8xW1"].concat(),
        ),
        (
            "gcp",
            ["AI", "za", "SyDk3jf9Xq2LmN8pR4tV6wY1zA5bC7dE0fG"].concat(),
        ),
        ("github_classic", ["gh", "p_", &body36].concat()),
        ("github_oauth", ["gh", "o_", &body36].concat()),
        (
            "github_pat",
            [
                "github",
                "_pat_",
                "11ABCDEFG0",
                "123456789_abcdefghijKLMNOPQRSTuvwxyz",
            ]
            .concat(),
        ),
        (
            "slack",
            [
                "xo",
                "xb-",
                "1234567890-0987654321-",
                "AbCdEfGhIjKlMnOpQrStUv",
            ]
            .concat(),
        ),
        (
            "openai",
            ["s", "k-", "proj-", "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0"].concat(),
        ),
        (
            "anthropic",
            ["s", "k-ant-", "api03-", "Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9"].concat(),
        ),
        (
            "linear",
            ["lin", "_api_", "Mn8Bv6Cx4Za2Lk0Jh9Gf7Ds5Aq3Wp1"].concat(),
        ),
        ("db_password", ["Pr0d", "P4ss", "w0rdX9"].concat()),
        ("env_secret", ["s3", "cr3t", "V4lue", "Q8"].concat()),
        (
            "entropy",
            ["Q2xv", "9KpL", "7mZr", "4TbW", "8yNc", "3HsD"].concat(),
        ),
        (
            "azure",
            [
                "Zm9v", "YmFy", "YmF6", "cXV4", "MTIz", "NDU2", "Nzg5", "MGFi", "Y2Rl", "Zg==",
            ]
            .concat(),
        ),
        (
            "pem_body",
            ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "BKcwggSjAgEAAoIBAQC7"].concat(),
        ),
    ]
}

fn leaky_repo() -> tempfile::TempDir {
    let k: std::collections::HashMap<&str, String> = fake_keys().into_iter().collect();
    let begin = ["-----BEGIN ", "PRIVATE KEY-----"].concat();
    let end = ["-----END ", "PRIVATE KEY-----"].concat();
    let settings = format!(
        "\"\"\"Settings for the billing service.\"\"\"\n\
AWS_ACCESS_KEY_ID = \"{}\"\n\
aws_secret_access_key = \"{}\"\n\
GOOGLE_KEY = \"{}\"\n\
GITHUB_TOKEN = \"{}\"\n\
OAUTH = \"{}\"\n\
PAT = \"{}\"\n\
SLACK = \"{}\"\n\
OPENAI = \"{}\"\n\
ANTHROPIC = \"{}\"\n\
LINEAR = \"{}\"\n\
DATABASE_URL = \"postgres://billing:{}@db.internal:5432/billing\"\n\
SIGNING = \"{}\"\n\
STORAGE = \"DefaultEndpointsProtocol=https;AccountName=x;AccountKey={}\"\n\
\n\
def billing_settings():\n    \"\"\"Returns billing settings.\"\"\"\n    return {{\"gcp\": GOOGLE_KEY}}\n\
\n\
def private_key():\n    return \"\"\"{begin}\n{}\n{end}\"\"\"\n",
        k["aws_access_key"],
        k["aws_secret"],
        k["gcp"],
        k["github_classic"],
        k["github_oauth"],
        k["github_pat"],
        k["slack"],
        k["openai"],
        k["anthropic"],
        k["linear"],
        k["db_password"],
        k["entropy"],
        k["azure"],
        k["pem_body"],
    );
    let env_file = format!("API_TOKEN={}\n", k["env_secret"]);
    let js = format!(
        "// billing client\nexport const config = {{\n  password: \"{}\",\n  token: '{}',\n}};\nexport function billingClient() {{ return config; }}\n",
        k["env_secret"], k["github_classic"]
    );
    write_repo(&[
        ("billing/settings.py", &settings),
        ("billing/client.js", &js),
        ("deploy/app.env", &env_file),
        (".env", &env_file),
        (
            "certs/server.pem",
            &format!("{begin}\n{}\n{end}\n", k["pem_body"]),
        ),
        (
            "billing/service.py",
            "from .settings import billing_settings\n\ndef charge():\n    return billing_settings()\n",
        ),
    ])
}

fn assert_clean(what: &str, text: &str) {
    for (kind, key) in fake_keys() {
        assert!(!text.contains(&key), "{kind} key leaked through {what}");
    }
}

#[test]
fn no_fake_key_appears_in_any_output() {
    let dir = leaky_repo();
    let map = analyse(&dir);
    assert!(
        map.files()
            .iter()
            .all(|f| f.path != ".env" && f.path != "certs/server.pem")
    );
    assert_eq!(map.skipped().get("sensitive"), Some(&2));

    let summary = serde_json::to_string(&map.summary()).expect("json");
    assert_clean("summary", &summary);
    assert_clean("summary text", &map.summary().to_text());
    for path in ["billing/settings.py", "billing/client.js", "deploy/app.env"] {
        let fs = serde_json::to_string(&map.file_summary(path).expect("file")).expect("json");
        assert_clean("file summary", &fs);
    }
    for sym in ["billing_settings", "private_key", "billingClient", "config"] {
        if let Some(s) = map.symbol_summary(sym) {
            assert_clean("symbol summary", &serde_json::to_string(&s).expect("json"));
        }
    }
    let secret_in_request = ["token ", "gh", "p_", "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"].concat();
    let q = Query {
        text: format!("billing settings private key config {secret_in_request}"),
        hints: Hints {
            paths: vec!["billing/settings.py".into()],
            ..Hints::default()
        },
        top_k: 10,
    };
    let ranked = map.query(&q);
    assert_clean(
        "query results",
        &serde_json::to_string(&ranked).expect("json"),
    );
    for f in map.files() {
        assert_clean("file content", &f.content);
    }
    let prompt = assemble_prompt(&map, &q.text, &ranked, 6000, "gpt-4o");
    assert_clean("prompt", &prompt.text);
    assert!(
        prompt
            .included
            .iter()
            .any(|i| i.symbol.as_deref() == Some("private_key"))
            || prompt.text.contains("settings.py")
    );
    for kind in [
        "aws_access_key",
        "github_token",
        "slack_token",
        "openai_key",
        "anthropic_key",
        "linear_key",
        "private_key",
        "connection_string",
    ] {
        assert!(
            prompt.redactions.get(kind).copied().unwrap_or(0) >= 1,
            "no {kind} redaction counted: {:?}",
            prompt.redactions
        );
    }
    let values = serde_json::to_string(&prompt.redactions).expect("json");
    assert_clean("redaction counts", &values);
}

#[test]
fn per_file_redaction_counts_are_kept_without_values() {
    let dir = leaky_repo();
    let map = analyse(&dir);
    let settings = map
        .files()
        .iter()
        .find(|f| f.path == "billing/settings.py")
        .expect("settings");
    assert!(
        settings.redactions.values().sum::<usize>() >= 12,
        "{:?}",
        settings.redactions
    );
    // Line numbers survive redaction: the function still starts where it did.
    let fs = map.file_summary("billing/settings.py").expect("fs");
    let ps = fs
        .symbols
        .iter()
        .find(|s| s.name == "private_key")
        .expect("private_key");
    assert_eq!(ps.start_line, 20);
}
