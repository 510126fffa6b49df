//! Slack Events API callbacks and slash commands (docs/platforms.md §4.1).
//!
//! Triggers: `app_mention`; a `message` in a thread the bot already answers; the
//! slash command. Messages from bots (`bot_id`, `subtype=bot_message`) and edits
//! or deletions are ignored. The delivery identity is the message itself
//! (`channel:ts`): a retry carries the same message, and the `app_mention` and
//! `message` copies of one message (two `event_id`s) become one task.

use super::{Classified, Inbound, WebhookSource, str_at};
use crate::config::{IngestConfig, Limits, ProviderSecrets};
use crate::error::IngestError;
use crate::intake::{Draft, Requester};
use crate::routing::{Routing, command_words};
use crate::verify;
use crate::webhooks::{self, Outcome, labelled};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use contexten_config::{Secret, SecretSource};
use contexten_envelope::{ReplyTarget, RepositoryRef, SourceKind};
use serde::Deserialize;
use serde_json::{Value, json};

/// `POST /webhooks/slack`: Events API callbacks (JSON) and slash commands
/// (form), signed with `X-Slack-Signature` over `X-Slack-Request-Timestamp`
/// and the body.
#[derive(Debug, Clone, Copy)]
pub struct Slack;

const FORM: &str = "application/x-www-form-urlencoded";

/// Whether the request is a slash command (a form) rather than an event.
fn is_command(inbound: &Inbound<'_>) -> bool {
    webhooks::media_type(inbound.headers) == FORM
}

impl WebhookSource for Slack {
    fn name(&self) -> &'static str {
        "slack"
    }

    fn secret_var(&self) -> &'static str {
        "SLACK_SIGNING_SECRET"
    }

    fn secret<'c>(&self, secrets: &'c ProviderSecrets) -> Option<&'c SecretSource> {
        secrets.slack.as_ref()
    }

    fn check_media(&self, headers: &HeaderMap) -> Result<(), IngestError> {
        let media = webhooks::media_type(headers);
        if media != "application/json" && media != FORM {
            return Err(IngestError::UnsupportedMediaType(
                "application/json or application/x-www-form-urlencoded",
            ));
        }
        Ok(())
    }

    fn verify(
        &self,
        secrets: &[Secret],
        inbound: &Inbound<'_>,
        limits: &Limits,
    ) -> Result<(), IngestError> {
        verify::slack(
            secrets,
            inbound.header("x-slack-signature"),
            inbound.header("x-slack-request-timestamp"),
            inbound.body,
            inbound.received_ms / 1000,
            limits.slack_window,
        )?;
        Ok(())
    }

    fn classify(
        &self,
        inbound: &Inbound<'_>,
        cfg: &IngestConfig,
    ) -> Result<Classified, IngestError> {
        if is_command(inbound) {
            let command: SlashCommand = serde_urlencoded::from_bytes(inbound.body)
                .map_err(|e| IngestError::Malformed(format!("slash command form: {e}")))?;
            if let Err(reason) = cfg.requesters.slack_command(&command) {
                return Ok(Classified::Ignored(reason));
            }
            return Ok(Classified::Task(Box::new(classify_command(
                command,
                &cfg.routing,
            ))));
        }
        let payload = webhooks::parse_json(inbound.body)?;
        if let Err(reason) = cfg.requesters.slack_event(&payload) {
            return Ok(Classified::Ignored(reason));
        }
        Ok(classify_event(&payload, &cfg.routing))
    }

    fn ignored(&self, inbound: &Inbound<'_>, reason: &'static str) -> Response {
        let counted = webhooks::ignored(self.name(), reason);
        if !is_command(inbound) {
            return counted;
        }
        // Slack shows a slash command's body to the person who typed it.
        labelled(
            StatusCode::OK,
            json!({"response_type": "ephemeral", "text": "This workspace, channel or user may not use this command."}),
            "ignored",
        )
    }

    fn answer(&self, inbound: &Inbound<'_>, response: Response) -> Response {
        if !is_command(inbound) {
            // Slack documents a plain 200 as its success answer.
            return webhooks::as_200(response);
        }
        // Slack shows a slash command's 200 body to the user who typed it, and
        // nothing for an empty one: a new command's "On it" comes from the
        // dispatcher, ephemeral through the command's response_url.
        let refused = matches!(
            response.extensions().get::<Outcome>(),
            Some(Outcome("refused"))
        );
        let (text, outcome) = if refused {
            (
                "This request cannot be run here; the reason is posted in the channel.",
                "refused",
            )
        } else if response.status() == StatusCode::ACCEPTED {
            let mut empty = StatusCode::OK.into_response();
            empty.extensions_mut().insert(Outcome("accepted"));
            return empty;
        } else {
            ("Already received.", "duplicate")
        };
        labelled(
            StatusCode::OK,
            json!({"response_type": "ephemeral", "text": text}),
            outcome,
        )
    }
}

/// Classifies a verified Events API body.
pub fn classify_event(payload: &Value, routing: &Routing) -> Classified {
    match str_at(payload, &["type"]) {
        Some("url_verification") => {
            return match str_at(payload, &["challenge"]) {
                Some(challenge) => Classified::Answer {
                    body: json!({"challenge": challenge}),
                    outcome: "challenge",
                },
                None => Classified::Ignored("challenge_missing"),
            };
        }
        Some("event_callback") => {}
        _ => return Classified::Ignored("event_not_handled"),
    }
    let Some(event) = payload.get("event") else {
        return Classified::Ignored("event_missing");
    };
    if event.get("bot_id").is_some_and(|b| !b.is_null())
        || str_at(event, &["subtype"]) == Some("bot_message")
    {
        return Classified::Ignored("bot_sender");
    }
    if str_at(event, &["subtype"]).is_some_and(|s| s != "thread_broadcast") {
        return Classified::Ignored("subtype_not_handled");
    }
    let (Some(channel), Some(ts)) = (str_at(event, &["channel"]), str_at(event, &["ts"])) else {
        return Classified::Ignored("message_fields_missing");
    };
    let thread_ts = str_at(event, &["thread_ts"]);
    let text = strip_mentions(str_at(event, &["text"]).unwrap_or(""));
    let make = |parent: &str| {
        let command = command_words(&text);
        let mut draft = Draft::new(
            SourceKind::SLACK,
            ReplyTarget::Slack {
                channel: channel.to_owned(),
                thread_ts: parent.to_owned(),
            },
            command.text,
        );
        draft.explicit = command.explicit;
        draft.delivery_id = Some(format!("{channel}:{ts}"));
        draft.requested_by = str_at(event, &["user"]).map(str::to_owned);
        draft.conversation = Some(format!("slack:{channel}:{parent}"));
        set_repository(&mut draft, channel, routing);
        draft.requester = Some(Requester::Slack {
            team: str_at(payload, &["team_id"]).unwrap_or("").to_owned(),
            channel: channel.to_owned(),
        });
        if let Some(id) = str_at(payload, &["event_id"]) {
            draft
                .source_extra
                .insert("slack_event_id".into(), id.into());
        }
        if let Some(team) = str_at(payload, &["team_id"]) {
            draft
                .source_extra
                .insert("slack_team_id".into(), team.into());
        }
        Box::new(draft)
    };
    match str_at(event, &["type"]) {
        // A mention in a thread answers in that thread; otherwise it starts one.
        Some("app_mention") => Classified::Task(make(thread_ts.unwrap_or(ts))),
        Some("message") => match thread_ts {
            Some(parent) if parent != ts => Classified::TaskIfConversationKnown(make(parent)),
            _ => Classified::Ignored("not_in_thread"),
        },
        _ => Classified::Ignored("event_not_handled"),
    }
}

/// The form fields of a slash command.
#[derive(Debug, Deserialize)]
pub struct SlashCommand {
    pub command: String,
    #[serde(default)]
    pub text: String,
    pub channel_id: String,
    pub user_id: String,
    #[serde(default)]
    pub user_name: Option<String>,
    pub trigger_id: String,
    #[serde(default)]
    pub response_url: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub api_app_id: Option<String>,
}

/// A slash command is always a task. It has no parent message, so the answer
/// goes to the channel as a new message (`thread_ts` empty).
pub fn classify_command(command: SlashCommand, routing: &Routing) -> Draft {
    let words = command_words(&command.text);
    let mut draft = Draft::new(
        SourceKind::SLACK,
        ReplyTarget::Slack {
            channel: command.channel_id.clone(),
            thread_ts: String::new(),
        },
        words.text,
    );
    draft.explicit = words.explicit;
    draft.delivery_id = Some(format!("command:{}", command.trigger_id));
    draft.requested_by = Some(command.user_name.unwrap_or(command.user_id));
    draft.conversation = Some(format!(
        "slack:{}:command:{}",
        command.channel_id, command.trigger_id
    ));
    set_repository(&mut draft, &command.channel_id, routing);
    draft.requester = Some(Requester::Slack {
        team: command.team_id.clone().unwrap_or_default(),
        channel: command.channel_id.clone(),
    });
    if let Some(url) = command.response_url {
        draft
            .source_extra
            .insert("slack_response_url".into(), url.into());
    }
    if let Some(team) = command.team_id {
        draft
            .source_extra
            .insert("slack_team_id".into(), team.into());
    }
    draft
        .source_extra
        .insert("slack_command".into(), command.command.into());
    draft
}

/// A repository named in the text (the policy must allow it), else the one an
/// operator mapped to the channel in the routing rules.
fn set_repository(draft: &mut Draft, channel: &str, routing: &Routing) {
    let named = routing.repository_in_text(&draft.text);
    draft.repository_named = named.is_some();
    draft.repository = named
        .or_else(|| routing.repositories().slack_channels.get(channel).cloned())
        .map(|url| RepositoryRef {
            url,
            reference: None,
        });
}

/// Removes `<@U123>` mentions (Slack's wire form) from the text.
fn strip_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<@") {
        out.push_str(&rest[..start]);
        match rest[start..].find('>') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out.trim().to_owned()
}
