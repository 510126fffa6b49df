//! Chat-completion clients behind one interface (docs/design.md §10: small clients with a
//! configurable base URL, so tests point them at local fakes).
//!
//! - [`OpenAiClient`]: `POST {base}/chat/completions`, the OpenAI wire format that
//!   OpenAI, vLLM, Ollama and llama.cpp's server all speak (docs/platforms.md §6.1).
//! - [`AnthropicClient`]: `POST {base}/messages` (Anthropic Messages API).
//! - [`LlmClient`]: either, chosen by `LLM_PROVIDER`; [`LlmSettings`] reads the
//!   `LLM_*` settings.
//!
//! Clients make exactly one HTTP call per [`LlmClient::complete`]; retries,
//! limits and the circuit breaker belong to the caller, which gets typed errors
//! ([`LlmError::retry_after`], [`LlmError::is_transient`], [`LlmError::trips_breaker`]).
//!
//! [`untrusted`] marks text from issues, comments and repositories as data in
//! any model prompt (the generator's and the Codegen agent's).

mod anthropic;
mod error;
mod openai;
mod settings;
pub mod untrusted;

pub use anthropic::AnthropicClient;
pub use error::LlmError;
pub use openai::OpenAiClient;
pub use settings::{LlmSettings, Provider};

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant message (a previous answer, for a repair round).
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// One completion request; model, temperature and max tokens come from the client.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
}

/// Tokens a call used, as the provider reports them (zero when it does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The answer of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub content: String,
    pub usage: Usage,
    /// The model that answered (as the provider names it).
    pub model: String,
    /// `stop`, `length`, `end_turn`, `max_tokens`, …
    pub finish_reason: Option<String>,
}

/// The configured provider.
#[derive(Debug, Clone)]
pub enum LlmClient {
    OpenAi(OpenAiClient),
    Anthropic(AnthropicClient),
}

impl LlmClient {
    /// The client `settings` describe, or `None` when no API key is configured.
    pub fn from_settings(settings: &LlmSettings) -> Result<Option<Self>, LlmError> {
        let Some(key) = settings.api_key.clone() else {
            return Ok(None);
        };
        Ok(Some(match settings.provider {
            Provider::OpenAi => LlmClient::OpenAi(OpenAiClient::new(settings, key)?),
            Provider::Anthropic => LlmClient::Anthropic(AnthropicClient::new(settings, key)?),
        }))
    }

    /// One completion call.
    pub async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        match self {
            LlmClient::OpenAi(client) => client.complete(request).await,
            LlmClient::Anthropic(client) => client.complete(request).await,
        }
    }

    /// The provider label (`openai`, `anthropic`) for metrics and logs.
    pub fn provider(&self) -> &'static str {
        match self {
            LlmClient::OpenAi(_) => "openai",
            LlmClient::Anthropic(_) => "anthropic",
        }
    }

    /// The model requested.
    pub fn model(&self) -> &str {
        match self {
            LlmClient::OpenAi(client) => client.model(),
            LlmClient::Anthropic(client) => client.model(),
        }
    }
}

/// Builds the HTTP client every provider uses (the fleet's, contexten-tls):
/// one timeout for the whole call, the connect within at most 10 s of it.
pub(crate) fn http_client(settings: &LlmSettings) -> Result<reqwest::Client, LlmError> {
    contexten_tls::http_client(contexten_tls::HttpTimeouts::new(settings.timeout))
        .build()
        .map_err(|e| LlmError::Setup(e.to_string()))
}

/// `base` joined with `path`, keeping any path the base URL has (`…/v1`).
pub(crate) fn endpoint(base: &url::Url, path: &str) -> String {
    format!("{}/{}", base.as_str().trim_end_matches('/'), path)
}
