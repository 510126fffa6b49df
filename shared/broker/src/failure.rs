//! The words of a failure answer. When a stage gives up on a task the requester
//! gets the reason code and one sentence chosen by that code, never the detail:
//! details quote stderr, local paths, internal host names and provider
//! messages, and the answer is posted where anyone in the thread can read it.
//! The detail goes to the dead-letter header (`x-contexten-dead-detail`) and the
//! log line, where operators look.

use contexten_envelope::{Reason, Stage};

/// The failure answer's summary for reason `code` at `stage`. `cause` is the
/// last retry's reason code when the code is `retries_exhausted`.
pub fn failure_text(stage: Stage, code: &str, cause: Option<&str>) -> String {
    let what = match code {
        "retries_exhausted" => match cause.filter(|c| is_code(c)) {
            Some(cause) => format!("the {stage} step kept failing (`{cause}`) and gave up"),
            None => format!("the {stage} step kept failing and gave up"),
        },
        code => Reason::from_code(code)
            .sentence()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the {stage} step could not complete it")),
    };
    format!("Sorry, your request could not be completed: {what}.")
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
