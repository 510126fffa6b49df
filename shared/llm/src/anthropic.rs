//! The Anthropic Messages wire format (`POST {base}/messages`).

use crate::error::{error_message, retry_after};
use crate::{ChatRequest, ChatResponse, LlmError, LlmSettings, Role, Usage, endpoint};
use contexten_config::{ExposeSecret, SecretSource};
use contexten_telemetry::client::TracedSend as _;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The API version header every request carries.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A client for Anthropic's Messages API.
#[derive(Clone)]
pub struct AnthropicClient {
    http: reqwest::Client,
    url: String,
    /// Read per call, so a rotated `LLM_API_KEY_FILE` takes effect.
    key: SecretSource,
    model: String,
    max_tokens: u32,
    temperature: f32,
    timeout: Duration,
}

impl std::fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicClient")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    temperature: f32,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

impl AnthropicClient {
    /// A client with `settings` and the API key `key`.
    pub fn new(settings: &LlmSettings, key: impl Into<SecretSource>) -> Result<Self, LlmError> {
        Ok(AnthropicClient {
            http: crate::http_client(settings)?,
            url: endpoint(&settings.base_url, "messages"),
            key: key.into(),
            model: settings.model.clone(),
            max_tokens: settings.max_tokens,
            temperature: settings.temperature.min(1.0),
            timeout: settings.timeout,
        })
    }

    /// The model requested.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// One `messages` call; system messages become the top-level `system`.
    pub async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let messages = request
            .messages
            .iter()
            .filter_map(|m| match m.role {
                Role::System => None,
                Role::User => Some(WireMessage {
                    role: "user",
                    content: &m.content,
                }),
                Role::Assistant => Some(WireMessage {
                    role: "assistant",
                    content: &m.content,
                }),
            })
            .collect();
        let body = Body {
            model: &self.model,
            max_tokens: self.max_tokens,
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            messages,
            temperature: self.temperature,
        };
        let response = self
            .http
            .post(&self.url)
            .header("x-api-key", self.key.current().expose_secret())
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&body)
            .send_traced("anthropic")
            .await
            .map_err(|e| LlmError::from_reqwest(e, self.timeout))?;
        let status = response.status().as_u16();
        let wait = retry_after(response.headers());
        let text = response
            .text()
            .await
            .map_err(|e| LlmError::from_reqwest(e, self.timeout))?;
        if !(200..300).contains(&status) {
            let (message, _code, kind) = error_message(&text);
            return Err(match status {
                429 => LlmError::RateLimited {
                    retry_after: wait,
                    message,
                },
                // 529 is `overloaded_error`.
                408 | 409 | 500..=599 => LlmError::Server {
                    status,
                    retry_after: wait,
                    message,
                },
                _ => LlmError::Rejected {
                    status,
                    code: kind,
                    message,
                },
            });
        }
        let answer: Answer = serde_json::from_str(&text)
            .map_err(|e| LlmError::InvalidResponse(format!("not a messages answer: {e}")))?;
        let content: String = answer
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect::<Vec<_>>()
            .join("");
        if content.is_empty() {
            return Err(LlmError::InvalidResponse("no text content".into()));
        }
        let usage = answer.usage.map_or(Usage::default(), |u| Usage {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
        });
        Ok(ChatResponse {
            content,
            usage,
            model: answer.model.unwrap_or_else(|| self.model.clone()),
            finish_reason: answer.stop_reason,
        })
    }
}
