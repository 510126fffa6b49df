//! Linear webhooks (docs/platforms.md §3.1): an Issue assigned to the bot or given
//! the trigger label (newly: compared with `updatedFrom`), or a Comment that
//! mentions the bot. Events whose actor is the bot are ignored.

use super::{Classified, Inbound, WebhookSource, str_at};
use crate::config::{IngestConfig, Limits, ProviderSecrets, TriggerSettings};
use crate::error::IngestError;
use crate::intake::{Draft, Requester};
use crate::routing::{Routing, find_command};
use crate::{verify, webhooks};
use axum::response::Response;
use contexten_config::{Secret, SecretSource};
use contexten_envelope::{ReplyTarget, RepositoryRef, SourceKind};
use serde_json::Value;

/// `POST /webhooks/linear`: `linear-signature` over the body, then
/// `webhookTimestamp` (inside the signed body) within
/// `LINEAR_TIMESTAMP_TOLERANCE_SECS`.
#[derive(Debug, Clone, Copy)]
pub struct Linear;

impl WebhookSource for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn secret_var(&self) -> &'static str {
        "LINEAR_WEBHOOK_SECRET"
    }

    fn secret<'c>(&self, secrets: &'c ProviderSecrets) -> Option<&'c SecretSource> {
        secrets.linear.as_ref()
    }

    fn verify(
        &self,
        secrets: &[Secret],
        inbound: &Inbound<'_>,
        _limits: &Limits,
    ) -> Result<(), IngestError> {
        verify::linear(secrets, inbound.header("linear-signature"), inbound.body)?;
        Ok(())
    }

    fn delivery_id(&self, inbound: &Inbound<'_>) -> Option<String> {
        inbound.header("linear-delivery").map(str::to_owned)
    }

    fn classify(
        &self,
        inbound: &Inbound<'_>,
        cfg: &IngestConfig,
    ) -> Result<Classified, IngestError> {
        let payload = webhooks::parse_json(inbound.body)?;
        // The timestamp is signed, so it is checked once the body is read.
        verify::linear_fresh(
            payload.get("webhookTimestamp").and_then(Value::as_u64),
            inbound.received_ms,
            cfg.limits.linear_window,
        )?;
        if let Err(reason) = cfg.requesters.linear(&payload) {
            return Ok(Classified::Ignored(reason));
        }
        Ok(classify(
            &payload,
            inbound.header("linear-delivery"),
            &cfg.triggers,
            &cfg.routing,
        ))
    }

    fn dedups_body(&self) -> bool {
        true
    }

    /// Linear documents a plain 200 as its success answer.
    fn answer(&self, _inbound: &Inbound<'_>, response: Response) -> Response {
        webhooks::as_200(response)
    }
}

/// Classifies a verified, fresh Linear delivery. `delivery` is the
/// `Linear-Delivery` header when present.
pub fn classify(
    payload: &Value,
    delivery: Option<&str>,
    triggers: &TriggerSettings,
    routing: &Routing,
) -> Classified {
    let bot = triggers.linear_bot_user_id.as_deref();
    let data = payload.get("data").unwrap_or(&Value::Null);
    let is_bot = |id: Option<&str>| bot.is_some() && id == bot;
    if is_bot(str_at(payload, &["actor", "id"]))
        || is_bot(str_at(data, &["userId"]))
        || data.get("botActor").is_some_and(|b| !b.is_null())
    {
        return Classified::Ignored("own_event");
    }
    let action = str_at(payload, &["action"]).unwrap_or("");
    let draft = match (str_at(payload, &["type"]), action) {
        (Some("Issue"), "create" | "update") => issue(payload, data, triggers, routing),
        (Some("Comment"), "create") => comment(data, triggers),
        (Some("Issue" | "Comment"), _) => Err("action_not_handled"),
        _ => Err("event_not_handled"),
    };
    match draft {
        Ok(mut draft) => {
            // Without `Linear-Delivery`, the webhook id and timestamp name the
            // delivery; the entity and action keep two events of one instant apart.
            draft.delivery_id = delivery.map(str::to_owned).or_else(|| {
                let hook = str_at(payload, &["webhookId"])?;
                let ts = payload.get("webhookTimestamp")?.as_u64()?;
                let entity = str_at(data, &["id"]).unwrap_or("");
                Some(format!("{hook}:{ts}:{entity}:{action}"))
            });
            draft.requested_by = str_at(payload, &["actor", "name"])
                .or_else(|| str_at(payload, &["actor", "id"]))
                .map(str::to_owned);
            let team = str_at(data, &["teamId"]).or_else(|| str_at(data, &["issue", "teamId"]));
            // Named in the text: the policy must allow it; else the team's
            // repository from the routing rules (an operator's choice).
            let named = routing.repository_in_text(&draft.text);
            draft.repository_named = named.is_some();
            draft.repository = named
                .or_else(|| team.and_then(|t| routing.repositories().linear_teams.get(t).cloned()))
                .map(|url| RepositoryRef {
                    url,
                    reference: None,
                });
            draft.requester = Some(Requester::Linear {
                organization: str_at(payload, &["organizationId"])
                    .unwrap_or("")
                    .to_owned(),
                team: team.map(str::to_owned),
            });
            if let Some(url) = str_at(payload, &["url"]) {
                draft.source_extra.insert("linear_url".into(), url.into());
            }
            Classified::Task(Box::new(draft))
        }
        Err(reason) => Classified::Ignored(reason),
    }
}

fn issue(
    payload: &Value,
    data: &Value,
    triggers: &TriggerSettings,
    routing: &Routing,
) -> Result<Draft, &'static str> {
    let id = str_at(data, &["id"]).ok_or("issue_id_missing")?;
    let created = str_at(payload, &["action"]) == Some("create");
    let updated_from = payload.get("updatedFrom");
    let bot = triggers.linear_bot_user_id.as_deref();
    let assigned_now = bot.is_some()
        && str_at(data, &["assigneeId"]) == bot
        && (created
            || updated_from
                .and_then(|u| u.get("assigneeId"))
                .is_some_and(|before| before.as_str() != bot));
    let labels: Vec<(&str, &str)> = data
        .get("labels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| Some((str_at(l, &["id"])?, str_at(l, &["name"])?)))
        .collect();
    let previous_ids: Option<Vec<&str>> = updated_from
        .and_then(|u| u.get("labelIds"))
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect());
    let label_added = labels.iter().find(|(label_id, name)| {
        let ours = name.eq_ignore_ascii_case(&triggers.trigger_label)
            || routing.label_strategy(name).is_some();
        let new = created || previous_ids.as_ref().is_some_and(|p| !p.contains(label_id));
        ours && new
    });
    if !assigned_now && label_added.is_none() {
        return Err(if updated_from.is_some() || created {
            "not_assigned_or_labeled"
        } else {
            "no_change"
        });
    }
    let title = str_at(data, &["title"]).unwrap_or("");
    let description = str_at(data, &["description"]).unwrap_or("");
    let mut draft = Draft::new(
        SourceKind::LINEAR,
        ReplyTarget::Linear {
            issue_id: id.to_owned(),
            comment_id: None,
        },
        format!("{title}\n\n{description}").trim().to_owned(),
    );
    // The label just added decides first when it names a strategy.
    draft.labels = label_added
        .iter()
        .map(|(_, n)| (*n).to_owned())
        .chain(labels.iter().map(|(_, n)| (*n).to_owned()))
        .collect();
    draft.conversation = Some(format!("linear:{id}"));
    if let Some(identifier) = str_at(data, &["identifier"]) {
        draft
            .request_extra
            .insert("linear_identifier".into(), identifier.into());
    }
    Ok(draft)
}

fn comment(data: &Value, triggers: &TriggerSettings) -> Result<Draft, &'static str> {
    let body = str_at(data, &["body"]).unwrap_or("");
    let command = find_command(
        body,
        &triggers.command_prefix,
        triggers.bot_login.as_deref(),
    )
    .ok_or("not_addressed_to_bot")?;
    let issue_id = str_at(data, &["issueId"])
        .or_else(|| str_at(data, &["issue", "id"]))
        .ok_or("issue_id_missing")?;
    let comment_id = str_at(data, &["parentId"]).or_else(|| str_at(data, &["id"]));
    let mut draft = Draft::new(
        SourceKind::LINEAR,
        ReplyTarget::Linear {
            issue_id: issue_id.to_owned(),
            comment_id: comment_id.map(str::to_owned),
        },
        command.text,
    );
    draft.explicit = command.explicit;
    draft.conversation = Some(format!("linear:{issue_id}"));
    Ok(draft)
}
