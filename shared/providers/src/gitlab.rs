//! GitLab (docs/platforms.md, GitLab): the reply target ingest writes for a
//! note or label event and the dispatcher's GitLab channel reads.

use contexten_envelope::{ChannelTarget, EnvelopeError, ReplyTarget};
use serde::{Deserialize, Serialize};

/// The channel's name: `source.kind`, `reply_to.kind`, metric labels.
pub const KIND: &str = "gitlab";

/// What a note belongs to; the path segment of GitLab's notes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Noteable {
    Issue,
    MergeRequest,
}

impl Noteable {
    /// `issues` or `merge_requests`, as in `/projects/{id}/{segment}/{iid}/notes`.
    pub fn path_segment(self) -> &'static str {
        match self {
            Noteable::Issue => "issues",
            Noteable::MergeRequest => "merge_requests",
        }
    }
}

/// Where a GitLab answer goes: a note on an issue or merge request, in the
/// trigger's discussion when it had one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitlabTarget {
    /// The project's numeric id (`project.id`).
    pub project_id: u64,
    pub noteable: Noteable,
    /// The issue's or merge request's `iid` (per project).
    pub iid: u64,
    /// The trigger note's discussion: answers are replies in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discussion_id: Option<String>,
    /// The trigger note: the acknowledgement is an award emoji on it (on the
    /// issue or merge request itself when the trigger was a label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note_id: Option<u64>,
}

impl GitlabTarget {
    /// The envelope's reply target.
    pub fn reply_target(&self) -> ReplyTarget {
        ReplyTarget::Channel(
            ChannelTarget::new(KIND, self).expect("a GitlabTarget serializes to a JSON object"),
        )
    }

    /// The GitLab target in `reply_to`, `None` when it is another channel's.
    pub fn from_reply_target(reply_to: &ReplyTarget) -> Option<Result<Self, EnvelopeError>> {
        match reply_to {
            ReplyTarget::Channel(target) if target.kind() == KIND => Some(target.decode()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_round_trips_through_the_envelope_form() {
        let target = GitlabTarget {
            project_id: 15,
            noteable: Noteable::MergeRequest,
            iid: 3,
            discussion_id: Some("6a9c1750b37d513a43987b574953fceb50b03ce7".into()),
            note_id: Some(1244),
        };
        let reply_to = target.reply_target();
        let json = serde_json::to_value(&reply_to).unwrap();
        assert_eq!(json["kind"], "gitlab");
        assert_eq!(json["noteable"], "merge_request");
        let back: ReplyTarget = serde_json::from_value(json).unwrap();
        assert_eq!(GitlabTarget::from_reply_target(&back).unwrap().unwrap(), target);
        assert!(GitlabTarget::from_reply_target(&ReplyTarget::None).is_none());
    }
}
