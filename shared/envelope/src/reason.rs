//! Why a stage retried a task or gave up on it: one vocabulary that the
//! dead-letter headers (`x-contexten-dead-reason`), metric labels, log lines,
//! status records and failure answers share (docs/operations.md §1).
//!
//! Each reason is a snake_case code. The fleet's own codes are variants;
//! a refusal code a platform returned itself (Slack's `channel_not_found`,
//! an HTTP status name) is [`Reason::Platform`], passed through as is. A code
//! read back from a header that this build does not know parses as
//! `Platform` too, so reading never fails.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $code:literal,)+) => {
        /// A reason code; see the module docs.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant,)+
            /// A refusal code the platform returned (or a code this build
            /// does not know, read back from a header).
            Platform(String),
        }

        impl Reason {
            /// Every reason of the fleet's own (not [`Reason::Platform`]).
            pub const OWN: &'static [Reason] = &[$(Reason::$variant,)+];

            /// The snake_case code.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Reason::$variant => $code,)+
                    Reason::Platform(code) => code,
                }
            }

            fn own(code: &str) -> Option<Reason> {
                match code {
                    $($code => Some(Reason::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    // The envelope (shared/envelope).
    /// The body is not JSON.
    InvalidJson = "invalid_json",
    /// The envelope's `v` is not one this build reads.
    UnknownVersion = "unknown_version",
    /// The envelope does not match its version.
    InvalidEnvelope = "invalid_envelope",
    // The runtime (shared/broker).
    /// A successor could not be routed to its queue.
    Unroutable = "unroutable",
    /// The stage's attempts (`MAX_ATTEMPTS`) are spent.
    RetriesExhausted = "retries_exhausted",
    /// Delivered `MAX_DELIVERIES` times without an outcome.
    Poison = "poison",
    /// The records Redis cannot be reached.
    RedisUnavailable = "redis_unavailable",
    // The request and the requester.
    /// The request has nothing to work from.
    InvalidRequest = "invalid_request",
    /// A limit (the requester's, a platform's) was reached.
    RateLimited = "rate_limited",
    // Reading the repository (context and generator workers).
    /// The deployment may not read that repository (git server, scheme, ref).
    RepositoryRefused = "repository_refused",
    /// The repository does not exist or is not visible.
    RepositoryNotFound = "repository_not_found",
    /// The git server did not answer in time.
    RepositoryTimeout = "repository_timeout",
    /// The repository is larger than the deployment reads.
    RepositoryTooLarge = "repository_too_large",
    /// The git server failed (transient).
    RepositoryUnavailable = "repository_unavailable",
    /// The repository policy does not let this requester read it.
    RepositoryNotAllowed = "repository_not_allowed",
    /// A request-named URL points where the deployment does not connect.
    OutboundRefused = "outbound_refused",
    /// A request-named host does not resolve.
    OutboundUnresolved = "outbound_unresolved",
    /// The analysis memory budget is taken (transient).
    MemoryBusy = "memory_busy",
    /// The analysis failed on this input.
    AnalysisPanicked = "analysis_panicked",
    // Generation (generator worker).
    /// The generated code did not validate, even after a repair.
    GenerationInvalid = "generation_invalid",
    /// The LLM provider refused the request.
    LlmRejected = "llm_rejected",
    /// The LLM provider is unavailable.
    LlmUnavailable = "llm_unavailable",
    /// The LLM breaker is open.
    LlmBreakerOpen = "llm_breaker_open",
    /// The LLM provider rate-limited us.
    LlmRateLimited = "llm_rate_limited",
    /// The fleet's own LLM token budget is spent for this minute.
    LlmTokensPerMinute = "llm_tokens_per_minute",
    /// The fleet's own LLM request budget is spent for this minute.
    LlmRequestsPerMinute = "llm_requests_per_minute",
    // The Codegen agent (agent worker).
    /// No Codegen credentials.
    AgentNotConfigured = "agent_not_configured",
    /// Codegen no longer knows the run.
    AgentRunNotFound = "agent_run_not_found",
    /// The organisation's run allowance is used up (402).
    CodegenLimitReached = "codegen_limit_reached",
    /// Codegen rejected the API token (401).
    CodegenUnauthorized = "codegen_unauthorized",
    /// Codegen refused access to the organisation (403).
    CodegenForbidden = "codegen_forbidden",
    /// Codegen could not find what the request names (404).
    CodegenNotFound = "codegen_not_found",
    /// Codegen rejected the request's fields (422).
    CodegenInvalidRequest = "codegen_invalid_request",
    /// Codegen answered another 4xx.
    CodegenRejected = "codegen_rejected",
    /// Codegen rate-limited us (429).
    CodegenRateLimited = "codegen_rate_limited",
    /// Codegen failed or could not be reached (5xx, transport).
    CodegenUnavailable = "codegen_unavailable",
    /// A Codegen call timed out.
    CodegenTimeout = "codegen_timeout",
    /// Codegen's answer could not be read.
    CodegenBadResponse = "codegen_bad_response",
    // Replies (dispatcher).
    /// The platform's client is misconfigured.
    ProviderMisconfigured = "provider_misconfigured",
    /// The reply's channel has no credentials.
    ProviderNotConfigured = "provider_not_configured",
    /// The platform failed or could not be reached (transient).
    ProviderUnavailable = "provider_unavailable",
    /// A slash command's `response_url` has no use left for the answer.
    ResponseUrlUsedUp = "response_url_used_up",
    /// The reply target's fields do not read as its channel's.
    InvalidReplyTarget = "invalid_reply_target",
    /// No reply channel is registered under the target's kind.
    UnknownReplyChannel = "unknown_reply_channel",
}

impl Reason {
    /// A code from a header, a platform or a record: the fleet's own variant
    /// when it is one, [`Reason::Platform`] otherwise.
    pub fn from_code(code: &str) -> Reason {
        Reason::own(code).unwrap_or_else(|| Reason::Platform(code.to_owned()))
    }
}

impl Reason {
    /// The sentence a failure answer gives for this reason (the fixed set the
    /// stages dead-letter with); `None` for the others, which get a generic one.
    pub fn sentence(&self) -> Option<&'static str> {
        Some(match self {
            Reason::Unroutable => "it could not be routed to its next step",
            Reason::InvalidRequest => "the request has no text to work from",
            Reason::RepositoryRefused => "this deployment is not allowed to read that repository",
            Reason::RepositoryNotFound => {
                "the repository could not be found, or this deployment has no access to it"
            }
            Reason::RepositoryTimeout => "the repository's server did not answer in time",
            Reason::RepositoryTooLarge => "the repository is larger than this deployment reads",
            Reason::OutboundRefused => {
                "the repository or callback address points where this deployment does not connect (a private, loopback or link-local address, or a scheme it does not use)"
            }
            Reason::OutboundUnresolved => "the repository's host name could not be resolved",
            Reason::RepositoryNotAllowed => {
                "the repository policy does not let this requester read that repository"
            }
            Reason::RateLimited => "too many requests from this requester; try again later",
            Reason::GenerationInvalid => {
                "the generated code did not pass validation, even after one repair attempt"
            }
            Reason::LlmRejected => "the language model provider refused the request",
            Reason::LlmUnavailable => "the language model provider is unavailable right now",
            Reason::LlmBreakerOpen => {
                "the language model provider keeps failing, so calls to it are paused for now"
            }
            Reason::AgentNotConfigured => "the Codegen agent is not configured on this deployment",
            Reason::CodegenLimitReached => {
                "the Codegen organisation's agent run allowance is used up"
            }
            Reason::CodegenUnauthorized => "Codegen rejected this deployment's API token",
            Reason::CodegenForbidden => "Codegen refused access to the organisation",
            Reason::CodegenNotFound => "Codegen could not find what the request refers to",
            Reason::CodegenInvalidRequest | Reason::CodegenRejected => {
                "Codegen rejected the request"
            }
            Reason::AgentRunNotFound => "Codegen no longer knows the agent run of this request",
            Reason::Poison => {
                "it made the worker handling it fail every time it was tried, so it was set aside for an operator"
            }
            _ => return None,
        })
    }
}

impl FromStr for Reason {
    type Err = std::convert::Infallible;
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Ok(Reason::from_code(code))
    }
}

impl From<&str> for Reason {
    fn from(code: &str) -> Self {
        Reason::from_code(code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Ok(Reason::from_code(&code))
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_own_code_is_snake_case_unique_and_reads_back_as_itself() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::OWN {
            let code = reason.as_str();
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            assert!(seen.insert(code), "{code} twice");
            assert_eq!(&Reason::from_code(code), reason);
        }
    }

    #[test]
    fn a_platform_code_passes_through_and_round_trips_as_a_string() {
        let reason = Reason::from_code("channel_not_found");
        assert_eq!(reason, Reason::Platform("channel_not_found".into()));
        let json = serde_json::to_string(&reason).unwrap();
        assert_eq!(json, "\"channel_not_found\"");
        assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), reason);
        let own: Reason = serde_json::from_str("\"poison\"").unwrap();
        assert_eq!(own, Reason::Poison);
        assert_eq!(own, "poison");
    }
}
