//! The callback a task's `callback_url` receives, for the OpenAPI document:
//! the body the dispatcher builds (`dispatcher::format::callback_body`; these
//! types describe it and must not drift from it, which a test checks by a
//! round trip) and the Standard Webhooks headers that sign it
//! (`contexten_providers::callback`).

use super::answer::{AnswerKind, Cost};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};

/// The body POSTed to `callback_url` for each reply of a task (an
/// acknowledgement, progress notes, then exactly one final answer or
/// failure), signed in the Standard Webhooks style: `webhook-id` (stable when
/// a delivery is repeated: deduplicate on it), `webhook-timestamp` (Unix
/// seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
/// "{id}.{timestamp}.{body}">`, with the deployment's callback secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CallbackPayload {
    #[serde(rename = "type")]
    pub event: CallbackEvent,
    /// When the body was built (RFC 3339, UTC).
    pub timestamp: String,
    pub data: CallbackData,
}

/// `task.<reply>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum CallbackEvent {
    #[serde(rename = "task.ack")]
    Ack,
    #[serde(rename = "task.progress")]
    Progress,
    #[serde(rename = "task.final")]
    Final,
    #[serde(rename = "task.failure")]
    Failure,
}

/// Which reply this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackReply {
    Ack,
    Progress,
    Final,
    Failure,
}

/// The reply's content.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CallbackData {
    pub task_id: String,
    /// The `Idempotency-Key`-derived or generated id of the request.
    pub correlation_id: String,
    pub reply: CallbackReply,
    /// The answer so far (`null` for an acknowledgement).
    pub result: Option<CallbackResult>,
    pub cost: Cost,
    /// Milliseconds from the request to the last finished step.
    pub total_ms: u64,
}

/// The answer in a callback (newer versions may add fields).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CallbackResult {
    pub kind: AnswerKind,
    /// The stage that produced it.
    pub produced_by: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The Codegen agent run's page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_requests: Vec<String>,
    /// For a failure: the snake_case reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Adds the callback to `POST /v1/tasks` (OpenAPI `callbacks`, keyed by the
/// request's `callback_url`). utoipa 5 has no typed field for an operation's
/// callbacks, so the object goes in through the operation's extension map,
/// which is serialised inline.
pub struct CallbackDoc;

impl utoipa::Modify for CallbackDoc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let header = |name: &str, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::Type::String),
                ))
                .build()
        };
        let receive = Operation::builder()
            .summary(Some("A reply of the task, signed"))
            .parameter(header(
                "webhook-id",
                "the delivery's id, the same when a delivery is repeated: deduplicate on it",
            ))
            .parameter(header(
                "webhook-timestamp",
                "when the delivery was signed, Unix seconds; refuse one more than 5 minutes from your clock",
            ))
            .parameter(header(
                "webhook-signature",
                "space-separated `v1,<base64>` signatures: HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` with the callback secret",
            ))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("CallbackPayload")))
                            .build(),
                    )
                    .build(),
            ))
            .response(
                "2XX",
                ResponseBuilder::new().description("received; not sent again"),
            )
            .response(
                "default",
                ResponseBuilder::new().description(
                    "408, 429 and 5xx are retried with backoff (429 after its Retry-After); other answers and redirects end the delivery",
                ),
            )
            .build();
        let callbacks = serde_json::json!({
            "taskReply": {
                "{$request.body#/callback_url}": PathItem::new(HttpMethod::Post, receive),
            }
        });
        if let Some(create) = openapi
            .paths
            .paths
            .get_mut("/v1/tasks")
            .and_then(|item| item.post.as_mut())
        {
            create
                .extensions
                .get_or_insert_with(Default::default)
                .insert("callbacks".into(), callbacks);
        }
    }
}
