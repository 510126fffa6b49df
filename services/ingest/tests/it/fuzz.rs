//! Arbitrary bytes, headers and (sometimes validly signed) JSON to every
//! endpoint: ingest never panics and answers only 2xx or 4xx, every 4xx with a
//! reason.

use crate::helpers::*;
use contexten_envelope::now_ms;
use ingest::verify::sign_hex;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

const PATHS: &[&str] = &[
    "/webhooks/github",
    "/webhooks/linear",
    "/webhooks/slack",
    "/webhooks/gitlab",
    "/v1/tasks",
    "/v1/tasks/0190a0a0-0000-7000-8000-000000000000",
    "/v1/tasks/%00",
    "/v1/openapi.json",
    "/nope",
];
const KEYS: &[&str] = &[
    "action",
    "type",
    "event",
    "comment",
    "body",
    "issue",
    "number",
    "repository",
    "full_name",
    "clone_url",
    "sender",
    "login",
    "data",
    "labels",
    "name",
    "id",
    "updatedFrom",
    "labelIds",
    "assigneeId",
    "webhookTimestamp",
    "channel",
    "ts",
    "thread_ts",
    "text",
    "user",
    "bot_id",
    "subtype",
    "challenge",
    "event_id",
    "author_association",
    "label",
    "pull_request",
    "head",
    "object_kind",
    "object_attributes",
    "noteable_type",
    "note",
    "iid",
    "project",
    "git_http_url",
    "merge_request",
    "last_commit",
    "source",
    "changes",
    "previous",
    "current",
    "title",
    "username",
];
const WORDS: &[&str] = &[
    "created",
    "labeled",
    "issue_comment",
    "event_callback",
    "app_mention",
    "message",
    "url_verification",
    "Issue",
    "Comment",
    "create",
    "update",
    "/contexten agent x",
    "@contexten-bot hi",
    "MEMBER",
    "Bot",
    "contexten",
    "1.0",
    "note",
    "MergeRequest",
    "merge_request",
    "open",
    "https://gitlab.com/a/b.git",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..6).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

#[derive(Debug, Clone)]
struct Case {
    path: &'static str,
    get: bool,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    sign: bool,
    headers: Vec<(&'static str, String)>,
}

fn case() -> impl Strategy<Value = Case> {
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ];
    let header_names = prop::sample::select(
        &[
            "x-github-event",
            "x-github-delivery",
            "x-hub-signature-256",
            "x-slack-signature",
            "x-slack-request-timestamp",
            "linear-signature",
            "authorization",
            "idempotency-key",
            "x-slack-retry-num",
            "content-length-ish",
        ][..],
    );
    let header_value = prop_oneof![
        ".{0,40}",
        prop::sample::select(WORDS).prop_map(str::to_owned),
        Just(format!("Bearer {}", token("both"))),
        Just("sha256=00".to_owned()),
    ];
    (
        prop::sample::select(PATHS),
        any::<bool>(),
        body,
        prop::option::of(prop::sample::select(
            &[
                "application/json",
                "application/x-www-form-urlencoded",
                "text/plain",
                "application/json; charset=utf-8",
                "multipart/form-data; boundary=x",
            ][..],
        )),
        any::<bool>(),
        prop::collection::vec((header_names, header_value), 0..5),
    )
        .prop_map(|(path, get, body, content_type, sign, headers)| Case {
            path,
            get,
            body,
            content_type,
            sign,
            headers,
        })
}

/// Valid signatures for the body, so parsing and classification are reached.
fn signed_headers(path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    match path {
        "/webhooks/github" => vec![
            (
                "x-hub-signature-256",
                format!("sha256={}", sign_hex(&secret(&github_secret()), body)),
            ),
            ("x-github-delivery", uuid::Uuid::now_v7().to_string()),
        ],
        "/webhooks/slack" => slack_headers(body, now_ms() / 1000),
        "/webhooks/linear" => vec![(
            "linear-signature",
            sign_hex(&secret(&linear_secret()), body),
        )],
        "/webhooks/gitlab" => vec![
            ("x-gitlab-token", gitlab_secret()),
            ("x-gitlab-event-uuid", uuid::Uuid::now_v7().to_string()),
        ],
        _ => vec![("authorization", format!("Bearer {}", token("both")))],
    }
}

/// Runs `cases` arbitrary requests; returns how often each status was seen.
fn run_cases(
    rt: &tokio::runtime::Runtime,
    ingest: &TestIngest,
    cases: u32,
    broker_down: bool,
) -> std::collections::BTreeMap<u16, u32> {
    // Through contexten-tls: reqwest has no crypto provider of its own.
    let http = contexten_tls::http(reqwest::Client::builder())
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    runner
        .run(&case(), |case| {
            let (status, body) = rt.block_on(async {
                let url = format!("{}{}", ingest.url, case.path);
                let mut request = if case.get {
                    http.get(&url)
                } else {
                    http.post(&url)
                };
                if let Some(ct) = case.content_type {
                    request = request.header("content-type", ct);
                }
                for (k, v) in &case.headers {
                    if let Ok(v) = reqwest::header::HeaderValue::from_str(v) {
                        request = request.header(*k, v);
                    }
                }
                if case.sign {
                    for (k, v) in signed_headers(case.path, &case.body) {
                        request = request.header(k, v);
                    }
                }
                let response = request
                    .body(case.body.clone())
                    .send()
                    .await
                    .expect("ingest answers");
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (status, body)
            });
            *seen.lock().unwrap().entry(status).or_default() += 1;
            let allowed = (200..300).contains(&status)
                || (400..500).contains(&status)
                || (broker_down && status == 503);
            prop_assert!(allowed, "status {} for {:?}: {}", status, case, body);
            if (400..500).contains(&status) || status == 503 {
                prop_assert!(
                    body["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "error without a reason: {}",
                    body
                );
            }
            Ok(())
        })
        .unwrap();
    seen.into_inner().unwrap()
}

#[test]
fn arbitrary_requests_to_every_endpoint_get_only_2xx_or_4xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ingest = rt.block_on(TestIngest::start());
    let seen = run_cases(&rt, &ingest, 400, false);
    // The cases reached past the signature checks too, not only the 401s.
    for status in [200, 400, 401, 404, 415] {
        assert!(seen.contains_key(&status), "no {status} among {seen:?}");
    }
    // With the broker deliberately down, 503 joins the allowed answers.
    ingest.proxy.stop();
    rt.block_on(ingest.wait_for_broker(false));
    let seen = run_cases(&rt, &ingest, 150, true);
    assert!(seen.keys().all(|s| *s != 500), "{seen:?}");
    ingest.proxy.resume();
    // Still serving after all of it.
    let health = rt.block_on(ingest.get("/healthz", None));
    assert_eq!(health.status, 200);
}

/// Text from any script, with characters whose lower-case form has another
/// byte length (U+212A KELVIN SIGN → `k`, U+0130 `İ` → `i̇`) next to mentions
/// and commands: command parsing, hints and routing never panic, and a
/// mention is still found.
#[test]
fn unicode_in_comments_and_commands_never_panics_routing_or_parsing() {
    use ingest::routing::{RouteInput, Routing, command_words, extract_hints, find_command};
    let pieces = prop::sample::select(vec![
        "\u{212A}",
        "\u{0130}",
        "İ",
        "ß",
        "ﬁ",
        "Σ",
        "ς",
        "@contexten-bot",
        "@CONTEXTEN-BOT",
        "/contexten",
        " ",
        "\n",
        "generate",
        "AGENT",
        "src/main.rs:10",
        "`f()`",
        "https://github.com/o/r",
        "é",
        "👍🏽",
        "\u{0301}",
        "ǅ",
        "Ⅻ",
        "@",
        "-",
        "_",
    ]);
    let text = prop::collection::vec(
        prop::strategy::Union::new(vec![
            pieces.prop_map(str::to_owned).boxed(),
            any::<String>().boxed(),
        ]),
        0..24,
    )
    .prop_map(|parts| parts.concat());
    let routing = Routing::shipped();
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        ..Config::default()
    });
    runner
        .run(&text, |text| {
            let found = find_command(&text, "/contexten", Some(BOT_LOGIN));
            let words = command_words(&text);
            let hints = extract_hints(&text);
            let _ = routing.repository_in_text(&text);
            for kind in [
                contexten_envelope::SourceKind::SLACK,
                contexten_envelope::SourceKind::GITHUB,
            ] {
                routing.decide(&RouteInput {
                    kind,
                    text: &words.text,
                    explicit: words.explicit.clone(),
                    labels: std::slice::from_ref(&text),
                    has_repository: true,
                    hints: &hints,
                });
            }
            // A mention separated by spaces is always found, whatever surrounds it.
            let with_mention = format!("{text} @{BOT_LOGIN} do it");
            prop_assert!(find_command(&with_mention, "/contexten", Some(BOT_LOGIN)).is_some());
            // Whatever was found is a piece of the text, never a corrupted slice.
            if let Some(command) = found {
                prop_assert!(command.text.chars().all(|c| text.contains(c)));
            }
            Ok(())
        })
        .unwrap();
    // The two characters from the issue, right before the mention.
    for prefix in ["\u{212A}\u{212A}\u{212A} ", "\u{0130}\u{0130} "] {
        let text = format!("{prefix}@{BOT_LOGIN} generate a parser");
        let command = find_command(&text, "/contexten", Some(BOT_LOGIN)).unwrap();
        assert_eq!(command.text, format!("{prefix} generate a parser"));
    }
}
