//! GitHub webhook events (docs/platforms.md §2.1): which deliveries become tasks.
//!
//! Triggers: `issue_comment.created` and `pull_request_review_comment.created`
//! that start with the command prefix or mention the bot, from an allowed
//! `author_association`; `issues.labeled` and `pull_request.labeled` with the
//! trigger label or a strategy label. Labeling needs triage access, which
//! GitHub itself checks, so labels carry no association test. Events sent by
//! bots or by our own login are ignored.
//!
//! A request about a pull request (a comment on it, a review comment, the
//! label) reads the PR's head, not the default branch: the event's own (base)
//! repository at `refs/pull/{number}/head`, which GitHub keeps there for PRs
//! from forks too, so no fork URL is ever fetched. The request's `extra`
//! carries `github_pull_request` (the number) and, when the payload has it,
//! `github_pull_base` (`{ref, sha}`) and `github_pull_head_sha`; a comment's
//! payload has no base, so the context worker asks the pulls API for it. A
//! review comment's `path` (and `line`) become the request's explicit hints.

use super::{Classified, Inbound, WebhookSource, str_at};
use crate::config::{IngestConfig, Limits, ProviderSecrets, TriggerSettings};
use crate::error::IngestError;
use crate::intake::{Draft, Requester};
use crate::replay::github_event_time_ms;
use crate::routing::{Routing, find_command};
use crate::{verify, webhooks};
use axum::http::HeaderMap;
use contexten_config::{Secret, SecretSource};
use contexten_envelope::{ReplyTarget, RepositoryRef, SourceKind};
use contexten_trust::policy::RepoId;
use serde_json::{Value, json};

/// `POST /webhooks/github`: `X-Hub-Signature-256` over the body, the
/// delivery in `X-GitHub-Delivery`, the event in `X-GitHub-Event`.
#[derive(Debug, Clone, Copy)]
pub struct Github;

impl WebhookSource for Github {
    fn name(&self) -> &'static str {
        "github"
    }

    fn secret_var(&self) -> &'static str {
        "GITHUB_WEBHOOK_SECRET"
    }

    fn secret<'c>(&self, secrets: &'c ProviderSecrets) -> Option<&'c SecretSource> {
        secrets.github.as_ref()
    }

    fn verify(
        &self,
        secrets: &[Secret],
        inbound: &Inbound<'_>,
        _limits: &Limits,
    ) -> Result<(), IngestError> {
        verify::github(secrets, inbound.header("x-hub-signature-256"), inbound.body)?;
        Ok(())
    }

    fn delivery_id(&self, inbound: &Inbound<'_>) -> Option<String> {
        inbound.header("x-github-delivery").map(str::to_owned)
    }

    fn classify(
        &self,
        inbound: &Inbound<'_>,
        cfg: &IngestConfig,
    ) -> Result<Classified, IngestError> {
        let event = inbound
            .header("x-github-event")
            .ok_or(IngestError::MissingHeader("X-GitHub-Event"))?;
        let delivery = inbound
            .header("x-github-delivery")
            .ok_or(IngestError::MissingHeader("X-GitHub-Delivery"))?;
        let payload = webhooks::parse_json(inbound.body)?;
        if let Err(reason) = cfg.requesters.github(&payload) {
            return Ok(Classified::Ignored(reason));
        }
        let classified = classify(event, delivery, &payload, &cfg.triggers, &cfg.routing);
        // A signed event older than the delivery dedup window is a replay
        // whose body hash has expired (see `crate::replay`).
        let max_age_ms = cfg.limits.dedup_ttl.as_millis() as u64;
        if matches!(classified, Classified::Task(_))
            && github_event_time_ms(&payload)
                .is_some_and(|at| inbound.received_ms.saturating_sub(at) > max_age_ms)
        {
            return Ok(Classified::Ignored("stale_event"));
        }
        Ok(classified)
    }

    fn dedups_body(&self) -> bool {
        true
    }

    // GitHub does not retry a failed delivery by itself.
    fn unretried_delivery<'h>(&self, headers: &'h HeaderMap) -> Option<(&'h str, &'h str)> {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        Some((header("x-github-delivery")?, header("x-github-event")?))
    }
}

/// Classifies one verified delivery of `event`.
pub fn classify(
    event: &str,
    delivery: &str,
    payload: &Value,
    triggers: &TriggerSettings,
    routing: &Routing,
) -> Classified {
    if event == "ping" {
        return Classified::Answer {
            body: json!({"status": "pong", "zen": payload.get("zen")}),
            outcome: "ping",
        };
    }
    if let Some(reason) = from_ourselves(payload, triggers) {
        return Classified::Ignored(reason);
    }
    let action = str_at(payload, &["action"]).unwrap_or("");
    let draft = match (event, action) {
        ("issue_comment", "created") => comment(payload, "issue", triggers, routing),
        ("pull_request_review_comment", "created") => {
            comment(payload, "pull_request", triggers, routing)
        }
        ("issues", "labeled") => labeled(payload, "issue", triggers, routing),
        ("pull_request", "labeled") => labeled(payload, "pull_request", triggers, routing),
        ("issue_comment" | "issues" | "pull_request" | "pull_request_review_comment", _) => {
            Err("action_not_handled")
        }
        _ => Err("event_not_handled"),
    };
    match draft {
        Ok(mut draft) => {
            draft.delivery_id = Some(delivery.to_owned());
            let installation = payload.pointer("/installation/id").and_then(Value::as_u64);
            if let Some(id) = installation {
                draft
                    .source_extra
                    .insert("installation_id".into(), id.into());
            }
            draft.requester = requester(payload, installation);
            Classified::Task(Box::new(draft))
        }
        Err(reason) => Classified::Ignored(reason),
    }
}

fn from_ourselves(payload: &Value, triggers: &TriggerSettings) -> Option<&'static str> {
    let sender_type = str_at(payload, &["sender", "type"]);
    let sender = str_at(payload, &["sender", "login"]);
    let author = str_at(payload, &["comment", "user", "login"]);
    let is_bot_login = |login: Option<&str>| match (login, &triggers.bot_login) {
        (Some(login), Some(bot)) => login.eq_ignore_ascii_case(bot),
        _ => false,
    };
    if is_bot_login(sender) || is_bot_login(author) {
        return Some("own_event");
    }
    if sender_type == Some("Bot") || str_at(payload, &["comment", "user", "type"]) == Some("Bot") {
        return Some("bot_sender");
    }
    None
}

/// The ref GitHub keeps a pull request's head under in its base repository.
pub fn pull_head_ref(number: u64) -> String {
    format!("refs/pull/{number}/head")
}

/// A comment addressed to the bot: on an issue or PR (`item` = `issue`) or on
/// a line of a PR's diff (`item` = `pull_request`, a review comment).
fn comment(
    payload: &Value,
    item: &'static str,
    triggers: &TriggerSettings,
    routing: &Routing,
) -> Result<Draft, &'static str> {
    let body = str_at(payload, &["comment", "body"]).unwrap_or("");
    let command = find_command(
        body,
        &triggers.command_prefix,
        triggers.bot_login.as_deref(),
    )
    .ok_or("not_addressed_to_bot")?;
    let association = str_at(payload, &["comment", "author_association"]).unwrap_or("NONE");
    if !triggers
        .allowed_associations
        .contains(&association.to_uppercase())
    {
        return Err("author_not_allowed");
    }
    let mut draft = thread_draft(payload, item, command.text)?;
    draft.explicit = command.explicit;
    if let ReplyTarget::Github { comment_id, .. } = &mut draft.reply_to {
        *comment_id = payload.pointer("/comment/id").and_then(Value::as_u64);
    }
    draft.requested_by = str_at(payload, &["comment", "user", "login"]).map(str::to_owned);
    // Another repository the comment names is read instead of the event's own
    // only where the policy gives it to this owner or installation (decided in
    // `admission`); otherwise the comment is answered from its own repository.
    draft.github_named_repository = routing.repository_in_text(&draft.text);
    let on_pull_request =
        item == "pull_request" || payload.pointer("/issue/pull_request").is_some();
    if on_pull_request {
        read_pull_request(payload, item, &mut draft);
    }
    if item == "pull_request" {
        review_hints(payload, &mut draft);
    }
    Ok(draft)
}

/// Points the draft at the PR's head in the event's own repository and
/// records what the context worker needs for the PR's diff.
fn read_pull_request(payload: &Value, item: &str, draft: &mut Draft) {
    let ReplyTarget::Github { number, .. } = &draft.reply_to else {
        return;
    };
    let number = *number;
    draft
        .request_extra
        .insert("github_pull_request".into(), number.into());
    if let Some(repository) = draft.repository.as_mut() {
        repository.reference = Some(pull_head_ref(number));
    }
    let pr = payload.get(item);
    let at = |path: &[&str]| pr.and_then(|pr| str_at(pr, path)).map(str::to_owned);
    if let (Some(base_ref), Some(base_sha)) = (at(&["base", "ref"]), at(&["base", "sha"])) {
        draft.request_extra.insert(
            "github_pull_base".into(),
            serde_json::json!({"ref": base_ref, "sha": base_sha}),
        );
    }
    if let Some(head_sha) = at(&["head", "sha"]) {
        draft
            .request_extra
            .insert("github_pull_head_sha".into(), head_sha.into());
    }
    if let Some(default) = str_at(payload, &["repository", "default_branch"]) {
        draft
            .request_extra
            .insert("github_default_branch".into(), default.into());
    }
}

/// A review comment's file (and line) is what it is about: an explicit hint
/// ahead of anything found in its text.
fn review_hints(payload: &Value, draft: &mut Draft) {
    let Some(path) = str_at(payload, &["comment", "path"]) else {
        return;
    };
    draft.hints.paths = vec![path.to_owned()];
    draft.hints.target_file = Some(path.to_owned());
    let line = ["line", "original_line"]
        .iter()
        .find_map(|key| payload.pointer(&format!("/comment/{key}"))?.as_u64());
    if let Some(line) = line {
        draft
            .request_extra
            .insert("github_review_line".into(), line.into());
    }
}

fn labeled(
    payload: &Value,
    item: &'static str,
    triggers: &TriggerSettings,
    routing: &Routing,
) -> Result<Draft, &'static str> {
    let label = str_at(payload, &["label", "name"]).ok_or("label_missing")?;
    let is_trigger = label.eq_ignore_ascii_case(&triggers.trigger_label)
        || routing.label_strategy(label).is_some();
    if !is_trigger {
        return Err("label_not_ours");
    }
    let title = str_at(payload, &[item, "title"]).unwrap_or("");
    let body = str_at(payload, &[item, "body"]).unwrap_or("");
    let mut draft = thread_draft(
        payload,
        item,
        format!("{title}\n\n{body}").trim().to_owned(),
    )?;
    // The label just added decides first when it names a strategy.
    draft.labels = std::iter::once(label.to_owned())
        .chain(
            payload
                .pointer(&format!("/{item}/labels"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|l| l.get("name").and_then(Value::as_str))
                .filter(|l| *l != label)
                .map(str::to_owned),
        )
        .collect();
    draft.requested_by = str_at(payload, &["sender", "login"]).map(str::to_owned);
    if item == "pull_request" {
        // Read at its head, from the base repository (forks included).
        read_pull_request(payload, item, &mut draft);
    }
    Ok(draft)
}

/// The repository's owner and identity, for the repository policy.
fn requester(payload: &Value, installation: Option<u64>) -> Option<Requester> {
    let full_name = str_at(payload, &["repository", "full_name"])?;
    let (owner, name) = full_name.split_once('/')?;
    Some(Requester::Github {
        owner: owner.to_owned(),
        installation,
        repository: RepoId::github(owner, name).ok()?,
    })
}

/// The parts shared by every GitHub trigger: reply target, repository and conversation.
fn thread_draft(payload: &Value, item: &str, text: String) -> Result<Draft, &'static str> {
    let repo = str_at(payload, &["repository", "full_name"]).ok_or("repository_missing")?;
    let number = payload
        .pointer(&format!("/{item}/number"))
        .or_else(|| payload.get("number"))
        .and_then(Value::as_u64)
        .ok_or("number_missing")?;
    let mut draft = Draft::new(
        SourceKind::GITHUB,
        ReplyTarget::Github {
            repo: repo.to_owned(),
            number,
            comment_id: None,
        },
        text,
    );
    draft.repository = str_at(payload, &["repository", "clone_url"]).map(|url| RepositoryRef {
        url: url.to_owned(),
        reference: str_at(payload, &["repository", "default_branch"]).map(str::to_owned),
    });
    draft.conversation = Some(format!("github:{repo}#{number}"));
    draft.labels = payload
        .pointer(&format!("/{item}/labels"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    Ok(draft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triggers() -> TriggerSettings {
        TriggerSettings {
            command_prefix: "/contexten".into(),
            bot_login: Some("contexten-bot".into()),
            linear_bot_user_id: None,
            trigger_label: "contexten".into(),
            allowed_associations: ["OWNER", "MEMBER", "COLLABORATOR"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }

    fn repository() -> Value {
        json!({"full_name": "octo/hello", "clone_url": "https://github.com/octo/hello.git",
               "default_branch": "main"})
    }

    fn review_comment(association: &str, body: &str) -> Value {
        json!({
            "action": "created",
            "comment": {"id": 77, "body": body, "path": "src/lib.rs", "line": 42,
                        "user": {"login": "octocat", "type": "User"},
                        "author_association": association},
            "pull_request": {"number": 5, "title": "Add parse", "body": "",
                             "head": {"ref": "feature", "sha": "1111111111111111111111111111111111111111",
                                      "repo": {"clone_url": "https://github.com/fork/hello.git"}},
                             "base": {"ref": "main", "sha": "2222222222222222222222222222222222222222"}},
            "repository": repository(),
            "sender": {"login": "octocat", "type": "User"}
        })
    }

    fn task(event: &str, payload: &Value) -> Draft {
        match classify(event, "d-1", payload, &triggers(), &Routing::shipped()) {
            Classified::Task(draft) => *draft,
            other => panic!("{other:?}"),
        }
    }

    fn ignored(event: &str, payload: &Value) -> &'static str {
        match classify(event, "d-1", payload, &triggers(), &Routing::shipped()) {
            Classified::Ignored(reason) => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_review_comment_to_the_bot_reads_the_pr_head_with_its_line_as_the_hint() {
        let draft = task(
            "pull_request_review_comment",
            &review_comment("MEMBER", "/contexten why does this loop never end?"),
        );
        let repository = draft.repository.clone().unwrap();
        assert_eq!(
            repository.url, "https://github.com/octo/hello.git",
            "the base repository, not the fork"
        );
        assert_eq!(repository.reference.as_deref(), Some("refs/pull/5/head"));
        assert_eq!(draft.hints.paths, ["src/lib.rs"]);
        assert_eq!(draft.hints.target_file.as_deref(), Some("src/lib.rs"));
        assert_eq!(draft.request_extra["github_pull_request"], 5);
        assert_eq!(draft.request_extra["github_review_line"], 42);
        assert_eq!(draft.request_extra["github_pull_base"]["ref"], "main");
        assert_eq!(draft.conversation.as_deref(), Some("github:octo/hello#5"));
        match draft.reply_to {
            ReplyTarget::Github {
                number, comment_id, ..
            } => assert_eq!((number, comment_id), (5, Some(77))),
            other => panic!("{other:?}"),
        }
        let env = draft.into_envelope(&Routing::shipped());
        assert_eq!(env.request.hints.target_file.as_deref(), Some("src/lib.rs"));
    }

    #[test]
    fn review_comments_from_outsiders_or_not_for_the_bot_or_edited_are_ignored() {
        let event = "pull_request_review_comment";
        assert_eq!(
            ignored(event, &review_comment("NONE", "/contexten explain")),
            "author_not_allowed"
        );
        assert_eq!(
            ignored(event, &review_comment("OWNER", "looks good to me")),
            "not_addressed_to_bot"
        );
        let mut edited = review_comment("OWNER", "/contexten explain");
        edited["action"] = "edited".into();
        assert_eq!(ignored(event, &edited), "action_not_handled");
    }

    #[test]
    fn a_comment_on_a_pull_request_reads_its_head_and_one_on_an_issue_the_default_branch() {
        let comment = |pull_request: Option<Value>| {
            let mut issue = json!({"number": 9, "title": "t", "body": ""});
            if let Some(pr) = pull_request {
                issue["pull_request"] = pr;
            }
            json!({
                "action": "created", "issue": issue,
                "comment": {"id": 1, "body": "/contexten explain parse", "author_association": "OWNER",
                            "user": {"login": "octocat", "type": "User"}},
                "repository": repository(), "sender": {"login": "octocat", "type": "User"}
            })
        };
        let on_pr = task("issue_comment", &comment(Some(json!({"url": "x"}))));
        assert_eq!(
            on_pr.repository.unwrap().reference.as_deref(),
            Some("refs/pull/9/head")
        );
        assert_eq!(on_pr.request_extra["github_pull_request"], 9);
        assert_eq!(on_pr.request_extra["github_default_branch"], "main");
        assert!(
            !on_pr.request_extra.contains_key("github_pull_base"),
            "a comment's payload has no base"
        );
        let on_issue = task("issue_comment", &comment(None));
        assert_eq!(
            on_issue.repository.unwrap().reference.as_deref(),
            Some("main")
        );
        assert!(!on_issue.request_extra.contains_key("github_pull_request"));
    }

    #[test]
    fn a_labelled_pull_request_from_a_fork_is_read_from_the_base_repository() {
        let mut payload = review_comment("OWNER", "");
        payload["action"] = "labeled".into();
        payload["label"] = json!({"name": "contexten"});
        payload.as_object_mut().unwrap().remove("comment");
        let draft = task("pull_request", &payload);
        let repository = draft.repository.unwrap();
        assert_eq!(repository.url, "https://github.com/octo/hello.git");
        assert_eq!(repository.reference.as_deref(), Some("refs/pull/5/head"));
        assert_eq!(
            draft.request_extra["github_pull_base"],
            json!({"ref": "main", "sha": "2222222222222222222222222222222222222222"})
        );
        assert_eq!(
            draft.request_extra["github_pull_head_sha"],
            "1111111111111111111111111111111111111111"
        );
    }
}
