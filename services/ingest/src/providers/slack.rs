//! Slack Events API callbacks and slash commands (docs/platforms.md §4.1).
//!
//! Triggers: `app_mention`; a `message` in a thread the bot already answers; the
//! slash command. Messages from bots (`bot_id`, `subtype=bot_message`) and edits
//! or deletions are ignored. The delivery identity is the message itself
//! (`channel:ts`): a retry carries the same message, and the `app_mention` and
//! `message` copies of one message (two `event_id`s) become one task.

use super::{Classified, str_at};
use crate::intake::{Draft, Requester};
use crate::routing::{Routing, command_words};
use contexten_envelope::{ReplyTarget, RepositoryRef, SourceKind};
use serde::Deserialize;
use serde_json::Value;

/// Classifies a verified Events API body.
pub fn classify_event(payload: &Value, routing: &Routing) -> Classified {
    match str_at(payload, &["type"]) {
        Some("url_verification") => {
            return match str_at(payload, &["challenge"]) {
                Some(challenge) => Classified::Challenge(challenge.to_owned()),
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
