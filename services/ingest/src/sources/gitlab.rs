//! GitLab webhooks (docs/platforms.md, GitLab): which deliveries become tasks.
//!
//! GitLab sends the webhook's secret token verbatim in `X-Gitlab-Token`
//! (there is no signature over the body); it is compared in constant time
//! with `GITLAB_WEBHOOK_SECRET`. `X-Gitlab-Event-UUID` names the delivery.
//!
//! Triggers, with the GitHub source's settings (`CONTEXTEN_COMMAND_PREFIX`,
//! `CONTEXTEN_BOT_LOGIN`, `CONTEXTEN_TRIGGER_LABEL`):
//! - a new note (`Note Hook`) on an issue or merge request that starts with
//!   the command or mentions the bot; notes on commits and snippets, system
//!   notes and edits are ignored;
//! - an issue or merge request (`Issue Hook`, `Merge Request Hook`) opened
//!   with, or updated to get, the trigger label or a strategy label: its
//!   title and description are the request.
//!
//! Events whose `user.username` is the bot's login are ignored. The request
//! reads the event's own project at its default branch, or, for a merge
//! request, its source project at the head commit (`last_commit.id`); that
//! project must be on a recognised git server (gitlab.com or
//! `CONTEXTEN_GIT_SERVERS`), so a leaked token cannot point the workers at
//! another host. Repositories the text names are not read: the repository
//! policy has no GitLab requester scope to grant them.

use super::{Classified, Inbound, WebhookSource, str_at};
use crate::config::{IngestConfig, Limits, ProviderSecrets, TriggerSettings};
use crate::error::IngestError;
use crate::intake::Draft;
use crate::routing::{Routing, find_command};
use crate::verify::SignatureError;
use crate::webhooks;
use contexten_config::{ExposeSecret, Secret, SecretSource};
use contexten_envelope::{RepositoryRef, SourceKind};
use contexten_providers::gitlab::{GitlabTarget, KIND, Noteable};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// `POST /webhooks/gitlab`.
#[derive(Debug, Clone, Copy)]
pub struct Gitlab;

const TOKEN_HEADER: &str = "X-Gitlab-Token";

impl WebhookSource for Gitlab {
    fn name(&self) -> &'static str {
        KIND
    }

    fn secret_var(&self) -> &'static str {
        "GITLAB_WEBHOOK_SECRET"
    }

    fn secret<'c>(&self, secrets: &'c ProviderSecrets) -> Option<&'c SecretSource> {
        secrets.gitlab.as_ref()
    }

    fn verify(
        &self,
        secrets: &[Secret],
        inbound: &Inbound<'_>,
        _limits: &Limits,
    ) -> Result<(), IngestError> {
        let token = inbound
            .header(TOKEN_HEADER)
            .ok_or(SignatureError::Missing(TOKEN_HEADER))?;
        if token_matches(secrets, token) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch.into())
        }
    }

    fn delivery_id(&self, inbound: &Inbound<'_>) -> Option<String> {
        inbound.header("x-gitlab-event-uuid").map(str::to_owned)
    }

    fn classify(
        &self,
        inbound: &Inbound<'_>,
        cfg: &IngestConfig,
    ) -> Result<Classified, IngestError> {
        let payload = webhooks::parse_json(inbound.body)?;
        Ok(classify(&payload, &cfg.triggers, &cfg.routing))
    }

    /// The same body under another event UUID (a captured request sent again)
    /// creates nothing.
    fn dedups_body(&self) -> bool {
        true
    }
}

/// Whether `presented` is one of `secrets`. Both sides go through HMAC under
/// one fixed key and the tags are compared with `verify_slice` (constant
/// time), so neither the length nor the first differing byte shows in the
/// time taken; every secret is tried.
fn token_matches(secrets: &[Secret], presented: &str) -> bool {
    let tag = |value: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"contexten gitlab token")
            .unwrap_or_else(|_| unreachable!("hmac takes any key length"));
        mac.update(value);
        mac
    };
    let presented = tag(presented.as_bytes()).finalize().into_bytes();
    secrets.iter().fold(false, |matched, secret| {
        tag(secret.expose_secret().as_bytes())
            .verify_slice(&presented)
            .is_ok()
            | matched
    })
}

/// Classifies a verified GitLab delivery.
pub fn classify(payload: &Value, triggers: &TriggerSettings, routing: &Routing) -> Classified {
    let user = str_at(payload, &["user", "username"]);
    if let (Some(user), Some(bot)) = (user, &triggers.bot_login)
        && user.eq_ignore_ascii_case(bot)
    {
        return Classified::Ignored("own_event");
    }
    let draft = match str_at(payload, &["object_kind"]) {
        Some("note") => note(payload, triggers),
        Some("issue") => labeled(payload, Noteable::Issue, triggers, routing),
        Some("merge_request") => labeled(payload, Noteable::MergeRequest, triggers, routing),
        _ => Err("event_not_handled"),
    }
    .and_then(|draft| on_known_server(draft, routing));
    match draft {
        Ok(mut draft) => {
            draft.requested_by = user.map(str::to_owned);
            // Without `X-Gitlab-Event-UUID` (older GitLab), the event's own
            // identity is the dedup key; the header replaces it when sent.
            draft.delivery_id = fallback_delivery_id(payload);
            if let Some(url) = str_at(payload, &["object_attributes", "url"]) {
                draft.source_extra.insert("gitlab_url".into(), url.into());
            }
            if let Some(path) = str_at(payload, &["project", "path_with_namespace"]) {
                draft
                    .source_extra
                    .insert("gitlab_project".into(), path.into());
            }
            Classified::Task(Box::new(draft))
        }
        Err(reason) => Classified::Ignored(reason),
    }
}

/// A note addressed to the bot on an issue or merge request.
fn note(payload: &Value, triggers: &TriggerSettings) -> Result<Draft, &'static str> {
    let attributes = payload.get("object_attributes").ok_or("note_missing")?;
    // `action` is sent since GitLab 16.11; an edited note is not a new request.
    if str_at(attributes, &["action"]).is_some_and(|a| a != "create") {
        return Err("action_not_handled");
    }
    if attributes.get("system").and_then(Value::as_bool) == Some(true) {
        return Err("system_note");
    }
    let (noteable, item) = match str_at(attributes, &["noteable_type"]) {
        Some("Issue") => (Noteable::Issue, "issue"),
        Some("MergeRequest") => (Noteable::MergeRequest, "merge_request"),
        _ => return Err("noteable_not_handled"),
    };
    let body = str_at(attributes, &["note"]).unwrap_or("");
    let command = find_command(
        body,
        &triggers.command_prefix,
        triggers.bot_login.as_deref(),
    )
    .ok_or("not_addressed_to_bot")?;
    let subject = payload.get(item).ok_or("noteable_missing")?;
    let iid = subject
        .get("iid")
        .and_then(Value::as_u64)
        .ok_or("iid_missing")?;
    let target = GitlabTarget {
        project_id: project_id(payload)?,
        noteable,
        iid,
        discussion_id: str_at(attributes, &["discussion_id"]).map(str::to_owned),
        note_id: attributes.get("id").and_then(Value::as_u64),
    };
    let mut draft = thread_draft(payload, target, subject, command.text)?;
    draft.explicit = command.explicit;
    Ok(draft)
}

/// An issue or merge request opened with, or just given, the trigger label
/// or a strategy label.
fn labeled(
    payload: &Value,
    noteable: Noteable,
    triggers: &TriggerSettings,
    routing: &Routing,
) -> Result<Draft, &'static str> {
    let attributes = payload.get("object_attributes").ok_or("object_missing")?;
    let action = str_at(attributes, &["action"]).unwrap_or("");
    let changed = payload.pointer("/changes/labels");
    let (previous, current) = match (action, changed) {
        ("open" | "update", Some(change)) => (
            titles(change.get("previous")),
            titles(change.get("current")),
        ),
        ("open", None) => (Vec::new(), titles(payload.get("labels"))),
        ("update", None) => return Err("no_label_change"),
        _ => return Err("action_not_handled"),
    };
    let ours = |title: &str| {
        title.eq_ignore_ascii_case(&triggers.trigger_label)
            || routing.label_strategy(title).is_some()
    };
    let added = current
        .iter()
        .find(|title| ours(title) && !previous.contains(title))
        .ok_or("not_labeled")?
        .clone();
    let target = GitlabTarget {
        project_id: project_id(payload)?,
        noteable,
        iid: attributes
            .get("iid")
            .and_then(Value::as_u64)
            .ok_or("iid_missing")?,
        discussion_id: None,
        note_id: None,
    };
    let title = str_at(attributes, &["title"]).unwrap_or("");
    let description = str_at(attributes, &["description"]).unwrap_or("");
    let text = format!("{title}\n\n{description}").trim().to_owned();
    let mut draft = thread_draft(payload, target, attributes, text)?;
    // The label just added decides first when it names a strategy.
    draft.labels = std::iter::once(added.clone())
        .chain(current.into_iter().filter(|l| *l != added))
        .collect();
    Ok(draft)
}

/// The parts every GitLab trigger shares: reply target, conversation,
/// labels and the repository. `subject` is the issue or merge request
/// (`issue` / `merge_request` of a note, `object_attributes` of a label event).
fn thread_draft(
    payload: &Value,
    target: GitlabTarget,
    subject: &Value,
    text: String,
) -> Result<Draft, &'static str> {
    let noteable_name = match target.noteable {
        Noteable::Issue => "issue",
        Noteable::MergeRequest => "merge_request",
    };
    let mut draft = Draft::new(SourceKind::named(KIND), target.reply_target(), text);
    draft.conversation = Some(format!(
        "gitlab:{}:{noteable_name}:{}",
        target.project_id, target.iid
    ));
    draft.labels = titles(subject.get("labels"));
    draft.repository = Some(match target.noteable {
        Noteable::Issue => project_repository(payload)?,
        Noteable::MergeRequest => {
            draft
                .request_extra
                .insert("gitlab_merge_request".into(), target.iid.into());
            for (key, field) in [
                ("gitlab_target_branch", "target_branch"),
                ("gitlab_source_branch", "source_branch"),
            ] {
                if let Some(branch) = str_at(subject, &[field]) {
                    draft.request_extra.insert(key.into(), branch.into());
                }
            }
            // The merge request's head: its source project (a fork, maybe)
            // at the last commit.
            match (
                str_at(subject, &["source", "git_http_url"]),
                str_at(subject, &["last_commit", "id"]),
            ) {
                (Some(url), Some(head)) => RepositoryRef {
                    url: url.to_owned(),
                    reference: Some(head.to_owned()),
                },
                _ => project_repository(payload)?,
            }
        }
    });
    Ok(draft)
}

/// The event's project at its default branch.
fn project_repository(payload: &Value) -> Result<RepositoryRef, &'static str> {
    let url = str_at(payload, &["project", "git_http_url"]).ok_or("repository_missing")?;
    Ok(RepositoryRef {
        url: url.to_owned(),
        reference: str_at(payload, &["project", "default_branch"]).map(str::to_owned),
    })
}

fn project_id(payload: &Value) -> Result<u64, &'static str> {
    payload
        .pointer("/project/id")
        .or_else(|| payload.get("project_id"))
        .and_then(Value::as_u64)
        .ok_or("project_missing")
}

/// Keeps the draft only when its repository is on a git server the fleet
/// recognises (gitlab.com or `CONTEXTEN_GIT_SERVERS`).
fn on_known_server(draft: Draft, routing: &Routing) -> Result<Draft, &'static str> {
    let url = draft.repository.as_ref().map(|r| r.url.as_str());
    // `repository_in_text` recognises a repository URL on exactly those servers.
    if url.is_some_and(|url| routing.repository_in_text(url).is_some()) {
        Ok(draft)
    } else {
        Err("git_server_not_allowed")
    }
}

/// The label titles in a list of GitLab label objects.
fn titles(labels: Option<&Value>) -> Vec<String> {
    labels
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("title").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// The event's identity when GitLab sends no `X-Gitlab-Event-UUID`: the note,
/// or the issue or merge request at its update time.
fn fallback_delivery_id(payload: &Value) -> Option<String> {
    let kind = str_at(payload, &["object_kind"])?;
    let attributes = payload.get("object_attributes")?;
    let id = attributes.get("id").and_then(Value::as_u64)?;
    match kind {
        "note" => Some(format!("note:{id}")),
        _ => Some(format!(
            "{kind}:{id}:{}",
            str_at(attributes, &["updated_at"]).unwrap_or("")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn triggers() -> TriggerSettings {
        TriggerSettings {
            command_prefix: "/contexten".into(),
            bot_login: Some("contexten-bot".into()),
            linear_bot_user_id: None,
            trigger_label: "contexten".into(),
            allowed_associations: Default::default(),
        }
    }

    fn routing() -> Routing {
        Routing::shipped().with_git_servers(&["https://gitlab.example.com".into()])
    }

    fn issue_note(note: &str) -> Value {
        json!({
            "object_kind": "note",
            "user": {"username": "alice"},
            "project": {"id": 15, "git_http_url": "https://gitlab.example.com/grp/sub/api.git",
                        "default_branch": "main", "path_with_namespace": "grp/sub/api"},
            "object_attributes": {"id": 1241, "note": note, "noteable_type": "Issue",
                                  "discussion_id": "d1", "system": false},
            "issue": {"iid": 7, "title": "Crash", "labels": [{"title": "bug"}]}
        })
    }

    fn task(payload: &Value) -> Draft {
        match classify(payload, &triggers(), &routing()) {
            Classified::Task(draft) => *draft,
            other => panic!("expected a task, got {other:?}"),
        }
    }

    fn ignored(payload: &Value) -> &'static str {
        match classify(payload, &triggers(), &routing()) {
            Classified::Ignored(reason) => reason,
            other => panic!("expected ignored, got {other:?}"),
        }
    }

    #[test]
    fn a_token_is_one_of_the_secrets_compared_whole() {
        let secrets = [
            Secret::from(["glpat-old-", "0001"].concat()),
            Secret::from(["glpat-new-", "0002"].concat()),
        ];
        assert!(token_matches(&secrets, &["glpat-new-", "0002"].concat()));
        assert!(token_matches(&secrets, &["glpat-old-", "0001"].concat()));
        assert!(!token_matches(&secrets, &["glpat-new-", "000"].concat()));
        assert!(!token_matches(&secrets, &["glpat-new-", "00021"].concat()));
        assert!(!token_matches(&secrets, ""));
        assert!(!token_matches(&[], &["glpat-new-", "0002"].concat()));
    }

    #[test]
    fn a_note_to_the_bot_on_an_issue_reads_the_default_branch() {
        let draft = task(&issue_note("@contexten-bot why does `parse` panic?"));
        let target = GitlabTarget::from_reply_target(&draft.reply_to)
            .unwrap()
            .unwrap();
        assert_eq!(target.noteable, Noteable::Issue);
        assert_eq!((target.project_id, target.iid), (15, 7));
        assert_eq!(target.note_id, Some(1241));
        assert_eq!(target.discussion_id.as_deref(), Some("d1"));
        assert_eq!(draft.text, "why does `parse` panic?");
        assert_eq!(draft.requested_by.as_deref(), Some("alice"));
        assert_eq!(draft.conversation.as_deref(), Some("gitlab:15:issue:7"));
        assert_eq!(draft.labels, vec!["bug"]);
        let repository = draft.repository.unwrap();
        assert_eq!(repository.url, "https://gitlab.example.com/grp/sub/api.git");
        assert_eq!(repository.reference.as_deref(), Some("main"));
        assert_eq!(draft.delivery_id.as_deref(), Some("note:1241"));
    }

    #[test]
    fn notes_not_for_the_bot_are_ignored_with_their_reason() {
        assert_eq!(ignored(&issue_note("thanks!")), "not_addressed_to_bot");
        let mut own = issue_note("/contexten fix it");
        own["user"]["username"] = "Contexten-Bot".into();
        assert_eq!(ignored(&own), "own_event");
        let mut commit = issue_note("/contexten fix it");
        commit["object_attributes"]["noteable_type"] = "Commit".into();
        assert_eq!(ignored(&commit), "noteable_not_handled");
        let mut edited = issue_note("/contexten fix it");
        edited["object_attributes"]["action"] = "update".into();
        assert_eq!(ignored(&edited), "action_not_handled");
        let mut system = issue_note("/contexten fix it");
        system["object_attributes"]["system"] = true.into();
        assert_eq!(ignored(&system), "system_note");
        let mut elsewhere = issue_note("/contexten fix it");
        elsewhere["project"]["git_http_url"] = "https://git.other.example/a/b.git".into();
        assert_eq!(ignored(&elsewhere), "git_server_not_allowed");
        assert_eq!(
            ignored(&json!({"object_kind": "push"})),
            "event_not_handled"
        );
    }

    #[test]
    fn labels_count_only_when_just_added() {
        let issue = |action: &str, changes: Value| {
            json!({
                "object_kind": "issue",
                "user": {"username": "alice"},
                "project": {"id": 15, "git_http_url": "https://gitlab.com/grp/api.git",
                            "default_branch": "main"},
                "object_attributes": {"id": 301, "iid": 4, "title": "Add retries",
                                      "description": "With backoff.", "action": action,
                                      "labels": [{"title": "contexten"}]},
                "labels": [{"title": "contexten"}],
                "changes": changes,
            })
        };
        let added = json!({"labels": {"previous": [], "current": [{"title": "contexten"}]}});
        let draft = task(&issue("update", added));
        assert_eq!(draft.text, "Add retries\n\nWith backoff.");
        let target = GitlabTarget::from_reply_target(&draft.reply_to)
            .unwrap()
            .unwrap();
        assert_eq!((target.iid, target.note_id), (4, None));
        assert_eq!(task(&issue("open", json!({}))).labels, vec!["contexten"]);
        let kept = json!({"labels": {"previous": [{"title": "contexten"}],
                                     "current": [{"title": "contexten"}, {"title": "x"}]}});
        assert_eq!(ignored(&issue("update", kept)), "not_labeled");
        assert_eq!(
            ignored(&issue("update", json!({"title": {}}))),
            "no_label_change"
        );
        assert_eq!(ignored(&issue("close", json!({}))), "action_not_handled");
    }

    #[test]
    fn a_labelled_merge_request_reads_its_source_project_at_the_last_commit() {
        let payload = json!({
            "object_kind": "merge_request",
            "user": {"username": "maintainer"},
            "project": {"id": 15, "git_http_url": "https://gitlab.com/grp/api.git",
                        "default_branch": "main"},
            "object_attributes": {"id": 99, "iid": 1, "title": "MS-Viewport", "description": "",
                                  "action": "open", "target_branch": "main",
                                  "source_branch": "ms-viewport",
                                  "source": {"git_http_url": "https://gitlab.com/fork/api.git"},
                                  "last_commit": {"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}},
            "labels": [{"title": "contexten"}],
        });
        let draft = task(&payload);
        let repository = draft.repository.unwrap();
        assert_eq!(repository.url, "https://gitlab.com/fork/api.git");
        assert_eq!(
            repository.reference.as_deref(),
            Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
        );
        assert_eq!(draft.text, "MS-Viewport");
        assert_eq!(
            draft.conversation.as_deref(),
            Some("gitlab:15:merge_request:1")
        );
        assert_eq!(draft.request_extra["gitlab_source_branch"], "ms-viewport");
        assert_eq!(draft.delivery_id.as_deref(), Some("merge_request:99:"));
    }
}
