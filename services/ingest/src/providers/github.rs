//! GitHub webhook events (EXTERNAL-APIS §6.1): which deliveries become tasks.
//!
//! Triggers: `issue_comment.created` that starts with the command prefix or
//! mentions the bot, from an allowed `author_association`; `issues.labeled` and
//! `pull_request.labeled` with the trigger label or a strategy label. Labeling
//! needs triage access, which GitHub itself checks, so labels carry no
//! association test. Events sent by bots or by our own login are ignored.

use super::{Classified, str_at};
use crate::config::TriggerSettings;
use crate::intake::{Draft, Requester};
use crate::routing::{Routing, find_command};
use contexten_envelope::{ReplyTarget, RepositoryRef, SourceKind};
use contexten_trust::policy::RepoId;
use serde_json::Value;

/// Classifies one verified delivery of `event`.
pub fn classify(
    event: &str,
    delivery: &str,
    payload: &Value,
    triggers: &TriggerSettings,
    routing: &Routing,
) -> Classified {
    if event == "ping" {
        return Classified::Ping;
    }
    if let Some(reason) = from_ourselves(payload, triggers) {
        return Classified::Ignored(reason);
    }
    let action = str_at(payload, &["action"]).unwrap_or("");
    let draft = match (event, action) {
        ("issue_comment", "created") => comment(payload, triggers, routing),
        ("issues", "labeled") => labeled(payload, "issue", triggers, routing),
        ("pull_request", "labeled") => labeled(payload, "pull_request", triggers, routing),
        ("issue_comment" | "issues" | "pull_request", _) => Err("action_not_handled"),
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

fn comment(
    payload: &Value,
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
    let mut draft = thread_draft(payload, "issue", command.text)?;
    draft.explicit = command.explicit;
    if let ReplyTarget::Github { comment_id, .. } = &mut draft.reply_to {
        *comment_id = payload.pointer("/comment/id").and_then(Value::as_u64);
    }
    draft.requested_by = str_at(payload, &["comment", "user", "login"]).map(str::to_owned);
    // Another repository the comment names is read instead of the event's own
    // only where the policy gives it to this owner or installation (decided in
    // `admission`); otherwise the comment is answered from its own repository.
    draft.github_named_repository = routing.repository_in_text(&draft.text);
    if payload.pointer("/issue/pull_request").is_some() {
        draft
            .request_extra
            .insert("github_pull_request".into(), true.into());
    }
    Ok(draft)
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
    if item == "pull_request"
        && let Some(head) = payload.pointer("/pull_request/head")
    {
        // A PR is read at its head (which may live in a fork).
        let url = str_at(head, &["repo", "clone_url"]);
        let reference = str_at(head, &["ref"]).map(str::to_owned);
        if let Some(url) = url {
            draft.repository = Some(RepositoryRef {
                url: url.to_owned(),
                reference,
            });
        }
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
        SourceKind::Github,
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
