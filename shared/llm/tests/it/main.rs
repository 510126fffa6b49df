//! Both clients against wiremock fakes speaking the providers' wire formats.

use contexten_config::Env;
use contexten_llm::{ChatRequest, LlmClient, LlmError, LlmSettings, Message};
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn key() -> String {
    ["sk-", "fake-", "llm-key"].concat()
}

fn client(server: &MockServer, provider: &str) -> LlmClient {
    let base = format!("{}/v1", server.uri());
    let key = key();
    let env = Env::from_pairs([
        ("LLM_PROVIDER", provider),
        ("LLM_BASE_URL", base.as_str()),
        ("LLM_API_KEY", key.as_str()),
        ("LLM_MODEL", "test-model"),
        ("LLM_MAX_TOKENS", "256"),
        ("LLM_TIMEOUT_SECS", "2"),
    ]);
    LlmClient::from_settings(&LlmSettings::from_env(&env).unwrap())
        .unwrap()
        .expect("a key is set")
}

fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![Message::system("be brief"), Message::user("write add")],
    }
}

#[tokio::test]
async fn openai_sends_the_documented_body_and_reads_the_first_choice() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {}", key()).as_str()))
        .and(body_partial_json(json!({
            "model": "test-model",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "write add"}],
            "max_tokens": 256,
            "stream": false
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "test-model-0613",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "def add(a, b):\n    return a + b\n"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let answer = client(&server, "openai")
        .complete(&request())
        .await
        .unwrap();
    assert!(answer.content.starts_with("def add"));
    assert_eq!(
        (answer.usage.prompt_tokens, answer.usage.completion_tokens),
        (12, 9)
    );
    assert_eq!(answer.model, "test-model-0613");
    assert_eq!(answer.finish_reason.as_deref(), Some("stop"));
}

#[tokio::test]
async fn openai_errors_are_classified_with_retry_after() {
    let server = MockServer::start().await;
    let error = |message: &str, kind: &str, code: &str| json!({"error": {"message": message, "type": kind, "code": code}});
    let cases = [
        (
            ResponseTemplate::new(429)
                .insert_header("retry-after", "3")
                .set_body_json(error(
                    "Rate limit reached",
                    "requests",
                    "rate_limit_exceeded",
                )),
            "rate_limited",
        ),
        (
            ResponseTemplate::new(429).set_body_json(error(
                "You exceeded your quota",
                "insufficient_quota",
                "insufficient_quota",
            )),
            "rejected",
        ),
        (
            ResponseTemplate::new(503).set_body_json(error("overloaded", "server_error", "")),
            "server_error",
        ),
        (
            ResponseTemplate::new(401).set_body_json(error(
                "Incorrect API key",
                "invalid_request_error",
                "invalid_api_key",
            )),
            "rejected",
        ),
        (
            ResponseTemplate::new(200).set_body_string("not json"),
            "invalid_response",
        ),
    ];
    let client = client(&server, "openai");
    for (template, expected) in cases {
        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(template)
            .mount(&server)
            .await;
        let err = client.complete(&request()).await.unwrap_err();
        assert_eq!(err.code(), expected, "{err}");
        if expected == "rate_limited" {
            assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
            assert!(err.is_transient() && !err.trips_breaker());
        }
        assert!(!err.to_string().contains(&key()));
    }
}

#[tokio::test]
async fn a_slow_provider_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let err = client(&server, "openai")
        .complete(&request())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Timeout(_)), "{err}");
    assert!(err.trips_breaker());
}

#[tokio::test]
async fn anthropic_moves_the_system_prompt_and_reads_text_blocks() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", key().as_str()))
        .and(header("anthropic-version", "2023-06-01"))
        .and(body_partial_json(json!({
            "model": "test-model", "max_tokens": 256, "system": "be brief",
            "messages": [{"role": "user", "content": "write add"}]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "test-model",
            "content": [{"type": "text", "text": "fn add() {}"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 7, "output_tokens": 4}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server, "anthropic");
    let answer = client.complete(&request()).await.unwrap();
    assert_eq!(answer.content, "fn add() {}");
    assert_eq!(
        (answer.usage.prompt_tokens, answer.usage.completion_tokens),
        (7, 4)
    );

    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(529).set_body_json(json!({
            "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}
        })))
        .mount(&server)
        .await;
    let err = client.complete(&request()).await.unwrap_err();
    assert!(matches!(err, LlmError::Server { status: 529, .. }), "{err}");
}

#[test]
fn no_key_means_no_client() {
    let settings = LlmSettings::from_env(&Env::default()).unwrap();
    assert!(LlmClient::from_settings(&settings).unwrap().is_none());
}

#[tokio::test]
async fn a_rotated_api_key_file_is_sent_once_the_file_is_looked_at_again() {
    let server = MockServer::start().await;
    let (old, new) = (
        ["sk-", "old-", "0001"].concat(),
        ["sk-", "new-", "0002"].concat(),
    );
    for key in [&old, &new] {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(header("authorization", format!("Bearer {key}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "model": "test-model",
                "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1}
            })))
            .expect(1..)
            .mount(&server)
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("llm-key");
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let base = format!("{}/v1", server.uri());
    let shown = file.display().to_string();
    let env = Env::from_pairs([
        ("LLM_BASE_URL", base.as_str()),
        ("LLM_API_KEY_FILE", shown.as_str()),
        ("LLM_MODEL", "test-model"),
    ]);
    let client = LlmClient::from_settings(&LlmSettings::from_env(&env).unwrap())
        .unwrap()
        .expect("a key file is set");
    client.complete(&request()).await.unwrap();
    std::fs::write(&file, &new).unwrap();
    // The file is looked at again at most once a second: a bounded poll.
    let sent_new = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            client.complete(&request()).await.unwrap();
            let received = server.received_requests().await.unwrap_or_default();
            let last = received
                .last()
                .and_then(|r| r.headers.get("authorization").cloned());
            if last.is_some_and(|v| v.as_bytes() == format!("Bearer {new}").as_bytes()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(sent_new.is_ok(), "the new key was never sent");
}
