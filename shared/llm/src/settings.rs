//! The `LLM_*` settings (docs/design.md §11 names kept: `LLM_BASE_URL`, `LLM_API_KEY`,
//! `LLM_MODEL`).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `LLM_PROVIDER` | wire format: `openai` (OpenAI, vLLM, Ollama, llama.cpp) or `anthropic` | `openai` |
//! | `LLM_BASE_URL` | API base URL | `https://api.openai.com/v1` (`https://api.anthropic.com/v1` for anthropic) |
//! | `LLM_API_KEY` | API key; unset = no provider (context-only answers); or `LLM_API_KEY_FILE`, read per call (a rotated file is used within a second) | unset |
//! | `LLM_MODEL` | model name | `gpt-4.1` (`claude-sonnet-4-5` for anthropic) |
//! | `LLM_TIMEOUT_SECS` | timeout of one call, 1–600 | `60` |
//! | `LLM_MAX_TOKENS` | completion token limit per call, 16–128000 | `4096` |
//! | `LLM_TEMPERATURE` | sampling temperature, 0–2 | `0.1` |

use contexten_config::{ConfigError, Env, SecretSource};
use std::time::Duration;

/// The wire format spoken to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
}

impl std::str::FromStr for Provider {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "openai" => Ok(Provider::OpenAi),
            "anthropic" => Ok(Provider::Anthropic),
            _ => Err(()),
        }
    }
}

/// How to reach the LLM.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    /// `LLM_PROVIDER`: `openai` (default) or `anthropic`.
    pub provider: Provider,
    /// `LLM_BASE_URL`: default per provider.
    pub base_url: url::Url,
    /// `LLM_API_KEY` or `LLM_API_KEY_FILE` (read per call): unset means no
    /// provider is configured.
    pub api_key: Option<SecretSource>,
    /// `LLM_MODEL`: default `gpt-4.1` / `claude-sonnet-4-5`.
    pub model: String,
    /// `LLM_TIMEOUT_SECS`, 1–600, default 60.
    pub timeout: Duration,
    /// `LLM_MAX_TOKENS`, 16–128000, default 4096.
    pub max_tokens: u32,
    /// `LLM_TEMPERATURE`, 0–2, default 0.1 (autogenlib's value).
    pub temperature: f32,
}

impl LlmSettings {
    /// Reads and validates the settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let provider: Provider =
            env.parse("LLM_PROVIDER", Provider::OpenAi, "openai or anthropic")?;
        let (default_url, default_model) = match provider {
            Provider::OpenAi => ("https://api.openai.com/v1", "gpt-4.1"),
            Provider::Anthropic => ("https://api.anthropic.com/v1", "claude-sonnet-4-5"),
        };
        let temperature: f32 = env.parse("LLM_TEMPERATURE", 0.1, "a number from 0 to 2")?;
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ConfigError {
                var: "LLM_TEMPERATURE".into(),
                shown: temperature.to_string(),
                expected: "a number from 0 to 2".into(),
            });
        }
        Ok(LlmSettings {
            provider,
            base_url: env.url("LLM_BASE_URL", default_url, &["http", "https"])?,
            api_key: env.secret_source("LLM_API_KEY")?,
            model: env.string("LLM_MODEL", default_model),
            timeout: Duration::from_secs(env.ranged("LLM_TIMEOUT_SECS", 60, 1, 600)?),
            max_tokens: env.ranged("LLM_MAX_TOKENS", 4096, 16, 128_000)?,
            temperature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contexten_config::ExposeSecret;

    #[test]
    fn defaults_need_no_credentials() {
        let settings = LlmSettings::from_env(&Env::default()).unwrap();
        assert_eq!(settings.provider, Provider::OpenAi);
        assert_eq!(settings.base_url.as_str(), "https://api.openai.com/v1");
        assert_eq!(settings.model, "gpt-4.1");
        assert!(settings.api_key.is_none());
        assert!((settings.temperature - 0.1).abs() < f32::EPSILON);
        let anthropic =
            LlmSettings::from_env(&Env::from_pairs([("LLM_PROVIDER", "anthropic")])).unwrap();
        assert_eq!(anthropic.base_url.as_str(), "https://api.anthropic.com/v1");
    }

    #[test]
    fn bad_values_name_their_variable_and_keys_stay_hidden() {
        for (var, value) in [
            ("LLM_TEMPERATURE", "3"),
            ("LLM_PROVIDER", "gemini"),
            ("LLM_BASE_URL", "ftp://x"),
            ("LLM_MAX_TOKENS", "0"),
        ] {
            let err = LlmSettings::from_env(&Env::from_pairs([(var, value)])).unwrap_err();
            assert_eq!(err.var, var);
        }
        let key = ["sk-", "test-", "0123456789"].concat();
        let settings =
            LlmSettings::from_env(&Env::from_pairs([("LLM_API_KEY", key.as_str())])).unwrap();
        assert!(!format!("{settings:?}").contains(&key));
        assert_eq!(settings.api_key.unwrap().current().expose_secret(), key);
    }
}
