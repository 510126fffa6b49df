//! What a requester may do, decided before anything is queued (README
//! "Security model"): how often one person may ask ([`requester_limit`]), which
//! repositories their scope may name (the policy file), and where a URL they
//! name may point (the outbound guard). A refused chat request is answered in
//! its thread by the dispatcher ([`crate::intake::Refusal`]); a refused API
//! request gets a 4xx with the reason.

use crate::AppState;
use crate::intake::{Draft, Refusal};
use contexten_envelope::SourceKind;
use contexten_resilience::RateLimiter;
use contexten_telemetry::metric;
use contexten_trust::policy::{Decision, RepoId};
use std::time::Duration;

/// `INGEST_REQUESTER_LIMIT` requests per `INGEST_REQUESTER_WINDOW_SECS` per
/// requester (Slack user, Linear user, GitHub login, API token), whole fleet.
#[derive(Debug, Clone, Copy)]
pub struct RequesterLimit {
    pub limit: u32,
    pub window: Duration,
}

/// What to do with a request over its requester's limit.
#[derive(Debug, PartialEq)]
pub enum OverLimit {
    /// Tell the requester once per window (chat): answer with this refusal.
    Answer(Refusal),
    /// Already told in this window: drop it quietly.
    Quiet,
    /// The API: 429 with `Retry-After`.
    TooMany(Duration),
}

/// The requester's identity for the limit: source and who asked.
fn requester_key(draft: &Draft) -> String {
    format!(
        "{}:{}",
        draft.kind.as_str(),
        draft.requested_by.as_deref().unwrap_or("unknown")
    )
}

/// Takes one permit of the requester's window, or says what to answer.
pub async fn requester_limit(state: &AppState, draft: &Draft) -> Result<(), OverLimit> {
    let limit = state.cfg.requester_limit;
    let who = requester_key(draft);
    let limiter = RateLimiter::new(
        state.store.clone(),
        &format!("requester:{who}"),
        limit.limit,
        limit.window,
    );
    let Err(wait) = limiter.try_acquire().await else {
        return Ok(());
    };
    metric::ingest_rejected(draft.kind.as_str(), "rate_limited");
    let secs = wait.as_secs().max(1);
    if draft.kind == SourceKind::API {
        return Err(OverLimit::TooMany(Duration::from_secs(secs)));
    }
    // One "slow down" answer per window, not one per extra message.
    let notified_key = state.names.redis_key(&["ingest", "slowdown", &who]);
    let first = state
        .store
        .run::<(Option<String>,)>(|| {
            let mut p = redis::pipe();
            p.cmd("SET")
                .arg(&notified_key)
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(secs);
            p
        })
        .await
        .map(|(set,)| set.is_some())
        .unwrap_or(true);
    if !first {
        return Err(OverLimit::Quiet);
    }
    Err(OverLimit::Answer(Refusal {
        reason: "rate_limited",
        message: format!(
            "Slow down: you have sent {} requests in the last {}, the most one person may. Try again in {secs} s.",
            limit.limit,
            human_duration(limit.window)
        ),
    }))
}

/// Whether the draft's repository may be read for its requester: a repository
/// the requester named (message text, API field) needs the policy's
/// permission; the GitHub event's own repository and one an operator mapped to
/// a channel or team do not. Local repositories (a development switch) are
/// outside the policy.
pub fn repository_refusal(state: &AppState, draft: &Draft) -> Option<Refusal> {
    let repository = draft
        .repository
        .as_ref()
        .filter(|_| draft.repository_named)?;
    if is_local(&repository.url) {
        return None;
    }
    let refuse = |message: String| {
        Some(Refusal {
            reason: "repository_not_allowed",
            message,
        })
    };
    let repo = match RepoId::parse(&repository.url) {
        Ok(repo) => repo,
        Err(error) => return refuse(format!("The repository could not be read as one: {error}.")),
    };
    let Some(requester) = &draft.requester else {
        return refuse(format!(
            "This request does not say who sent it, so it may not read {repo}."
        ));
    };
    match state.policy.decide(&requester.scope(), &repo) {
        Decision::Allowed => None,
        Decision::Refused { permission } => {
            tracing::info!(%repo, source = draft.kind.as_str(), "repository refused by the policy");
            refuse(permission)
        }
    }
}

/// Switches a GitHub comment to the other repository it names when the
/// policy's `[[github]]` entry for its owner or installation allows it; a
/// GitHub event otherwise reads its own repository and nothing else.
pub fn adopt_github_named_repository(state: &AppState, draft: &mut Draft) {
    let (Some(named), Some(requester)) = (draft.github_named_repository.take(), &draft.requester)
    else {
        return;
    };
    let Ok(repo) = RepoId::parse(&named) else {
        return;
    };
    let own = draft
        .repository
        .as_ref()
        .and_then(|r| RepoId::parse(&r.url).ok());
    if own.as_ref() == Some(&repo) {
        return;
    }
    if state.policy.decide(&requester.scope(), &repo).is_allowed() {
        draft.repository = Some(contexten_envelope::RepositoryRef {
            url: named,
            reference: None,
        });
    } else {
        tracing::info!(%repo, "a GitHub comment names a repository its owner may not read; answering from its own");
    }
}

/// A path or `file://` URL on the worker's own disk.
fn is_local(url: &str) -> bool {
    url.starts_with("file://") || url.starts_with('/') || url.starts_with('.')
}

fn human_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s % 3600 == 0 && s >= 3600 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_as_people_say_them() {
        assert_eq!(human_duration(Duration::from_secs(600)), "10 min");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2 h");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 s");
    }
}
