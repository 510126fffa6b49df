//! The words of a failure answer. When a stage gives up on a task the requester
//! gets the reason code and one sentence chosen by that code, never the detail:
//! details quote stderr, local paths, internal host names and provider
//! messages, and the answer is posted where anyone in the thread can read it.
//! The detail goes to the dead-letter header (`x-contexten-dead-detail`) and the
//! log line, where operators look.

use contexten_envelope::Stage;

/// The failure answer's summary for reason `code` at `stage`. `cause` is the
/// last retry's reason code when the code is `retries_exhausted`.
pub fn failure_text(stage: Stage, code: &str, cause: Option<&str>) -> String {
    let what = match code {
        "retries_exhausted" => match cause.filter(|c| is_code(c)) {
            Some(cause) => format!("the {stage} step kept failing (`{cause}`) and gave up"),
            None => format!("the {stage} step kept failing and gave up"),
        },
        code => sentence(code)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the {stage} step could not complete it")),
    };
    format!("Sorry, your request could not be completed: {what}.")
}

/// The sentence of a known reason code (the fixed set the stages dead-letter with).
fn sentence(code: &str) -> Option<&'static str> {
    Some(match code {
        "unroutable" => "it could not be routed to its next step",
        "invalid_request" => "the request has no text to work from",
        "repository_refused" => "this deployment is not allowed to read that repository",
        "repository_not_found" => {
            "the repository could not be found, or this deployment has no access to it"
        }
        "repository_timeout" => "the repository's server did not answer in time",
        "repository_too_large" => "the repository is larger than this deployment reads",
        "outbound_refused" => {
            "the repository or callback address points where this deployment does not connect (a private, loopback or link-local address, or a scheme it does not use)"
        }
        "outbound_unresolved" => "the repository's host name could not be resolved",
        "repository_not_allowed" => {
            "the repository policy does not let this requester read that repository"
        }
        "rate_limited" => "too many requests from this requester; try again later",
        "generation_invalid" => {
            "the generated code did not pass validation, even after one repair attempt"
        }
        "llm_rejected" => "the language model provider refused the request",
        "llm_unavailable" => "the language model provider is unavailable right now",
        "llm_breaker_open" => {
            "the language model provider keeps failing, so calls to it are paused for now"
        }
        "agent_not_configured" => "the Codegen agent is not configured on this deployment",
        "codegen_limit_reached" => "the Codegen organisation's agent run allowance is used up",
        "codegen_unauthorized" => "Codegen rejected this deployment's API token",
        "codegen_forbidden" => "Codegen refused access to the organisation",
        "codegen_not_found" => "Codegen could not find what the request refers to",
        "codegen_invalid_request" | "codegen_rejected" => "Codegen rejected the request",
        "agent_run_not_found" => "Codegen no longer knows the agent run of this request",
        "poison" => {
            "it made the worker handling it fail every time it was tried, so it was set aside for an operator"
        }
        _ => return None,
    })
}

/// A snake_case reason code (what handlers pass), safe to show as is.
fn is_code(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_get_their_sentence_and_others_a_generic_one() {
        assert_eq!(
            failure_text(Stage::Context, "repository_not_found", None),
            "Sorry, your request could not be completed: the repository could not be found, \
             or this deployment has no access to it."
        );
        assert_eq!(
            failure_text(Stage::Agent, "something_new", None),
            "Sorry, your request could not be completed: the agent step could not complete it."
        );
    }

    #[test]
    fn exhausted_retries_name_the_last_code_but_never_free_text() {
        assert_eq!(
            failure_text(
                Stage::Generate,
                "retries_exhausted",
                Some("llm_rate_limited")
            ),
            "Sorry, your request could not be completed: the generate step kept failing \
             (`llm_rate_limited`) and gave up."
        );
        assert_eq!(
            failure_text(
                Stage::Generate,
                "retries_exhausted",
                Some("fatal: /var/lib/x")
            ),
            "Sorry, your request could not be completed: the generate step kept failing and gave up."
        );
    }
}
