//! The OpenAI chat-completions wire format (`POST {base}/chat/completions`).

use crate::error::{error_message, retry_after};
use crate::{ChatRequest, ChatResponse, LlmError, LlmSettings, Message, Usage, endpoint};
use contexten_config::{ExposeSecret, SecretSource};
use contexten_telemetry::client::TracedSend as _;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A client for OpenAI and every server speaking its API (vLLM, Ollama,
/// llama.cpp server, OpenRouter).
#[derive(Clone)]
pub struct OpenAiClient {
    http: reqwest::Client,
    url: String,
    /// Read per call, so a rotated `LLM_API_KEY_FILE` takes effect.
    key: SecretSource,
    model: String,
    max_tokens: u32,
    temperature: f32,
    timeout: Duration,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: &'a [Message],
    temperature: f32,
    /// `max_tokens` rather than `max_completion_tokens`: the self-hosted servers
    /// only know the former, and OpenAI still accepts it for chat models.
    max_tokens: u32,
    stream: bool,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl OpenAiClient {
    /// A client with `settings` and the API key `key`.
    pub fn new(settings: &LlmSettings, key: impl Into<SecretSource>) -> Result<Self, LlmError> {
        Ok(OpenAiClient {
            http: crate::http_client(settings)?,
            url: endpoint(&settings.base_url, "chat/completions"),
            key: key.into(),
            model: settings.model.clone(),
            max_tokens: settings.max_tokens,
            temperature: settings.temperature,
            timeout: settings.timeout,
        })
    }

    /// The model requested.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// One `chat/completions` call.
    pub async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let body = Body {
            model: &self.model,
            messages: &request.messages,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            stream: false,
        };
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(self.key.current().expose_secret())
            .json(&body)
            .send_traced("openai")
            .await
            .map_err(|e| LlmError::from_reqwest(e, self.timeout))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let text = response
            .text()
            .await
            .map_err(|e| LlmError::from_reqwest(e, self.timeout))?;
        if !status.is_success() {
            return Err(classify(status.as_u16(), wait, &text));
        }
        let answer: Answer = serde_json::from_str(&text)
            .map_err(|e| LlmError::InvalidResponse(format!("not a chat completion: {e}")))?;
        let choice = answer
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| LlmError::InvalidResponse("no choices".into()))?;
        let content = match (choice.message.content, choice.message.refusal) {
            (Some(content), _) => content,
            (None, Some(refusal)) => {
                return Err(LlmError::Rejected {
                    status: status.as_u16(),
                    code: Some("refusal".into()),
                    message: refusal,
                });
            }
            (None, None) => return Err(LlmError::InvalidResponse("no message content".into())),
        };
        let usage = answer.usage.map_or(Usage::default(), |u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        });
        Ok(ChatResponse {
            content,
            usage,
            model: answer.model.unwrap_or_else(|| self.model.clone()),
            finish_reason: choice.finish_reason,
        })
    }
}

/// Maps an error status and body to an [`LlmError`].
fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> LlmError {
    let (message, code, _kind) = error_message(body);
    match status {
        // OpenAI answers an exhausted quota with 429 too; waiting will not help.
        429 if code.as_deref() == Some("insufficient_quota") => LlmError::Rejected {
            status,
            code,
            message,
        },
        429 => LlmError::RateLimited {
            retry_after,
            message,
        },
        408 | 409 | 500..=599 => LlmError::Server {
            status,
            retry_after,
            message,
        },
        _ => LlmError::Rejected {
            status,
            code,
            message,
        },
    }
}
