//! The one error type of every client, classified for the caller's decision.

use contexten_trust::outbound::OutboundRefusal;
use std::time::Duration;

/// Why a call to a provider did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider asked us to slow down (429, GitHub's 403 secondary limit,
    /// Slack `ratelimited`, Linear `RATELIMITED`); nothing was applied.
    #[error("{provider} rate limit hit, retry after {retry_after:?}: {detail}")]
    RateLimited {
        provider: &'static str,
        retry_after: Duration,
        detail: String,
    },
    /// Retrying will not help (404, 410, 401, 422, `channel_not_found`, …).
    #[error("{provider} refused the request ({code}): {detail}")]
    Rejected {
        provider: &'static str,
        /// snake_case reason code, used as the dead-letter reason.
        code: String,
        detail: String,
    },
    /// May work later (5xx, timeout, connection error).
    #[error("{provider} unavailable: {detail}")]
    Unavailable {
        provider: &'static str,
        detail: String,
        /// The request may have reached the provider and taken effect (a timeout
        /// after sending, a 5xx on a write): reconcile before repeating it.
        maybe_applied: bool,
    },
    /// The outbound guard refused a destination the request named (loopback,
    /// a private or metadata address, plain http): nothing was sent, and
    /// retrying will not help. The refusal names the host, never the path.
    #[error("{provider} destination refused: {refusal}")]
    OutboundRefused {
        provider: &'static str,
        refusal: OutboundRefusal,
    },
    /// Our own settings are unusable (a private key that does not parse, …).
    #[error("{provider} is misconfigured: {detail}")]
    Misconfigured {
        provider: &'static str,
        detail: String,
    },
}

impl ProviderError {
    /// The snake_case code of this error (outcome reasons, metric labels).
    pub fn code(&self) -> &str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Rejected { code, .. } => code,
            ProviderError::Unavailable { .. } => "provider_unavailable",
            ProviderError::OutboundRefused { refusal, .. } => refusal.reason(),
            ProviderError::Misconfigured { .. } => "provider_misconfigured",
        }
    }

    /// Whether the failed request may nevertheless have taken effect.
    pub fn maybe_applied(&self) -> bool {
        matches!(
            self,
            ProviderError::Unavailable {
                maybe_applied: true,
                ..
            }
        )
    }

    pub(crate) fn rejected(provider: &'static str, code: &str, detail: impl Into<String>) -> Self {
        ProviderError::Rejected {
            provider,
            code: code.to_owned(),
            detail: detail.into(),
        }
    }
}
