//! From a recognised request to two confirmed messages: the task to its first
//! stage and an acknowledgement to dispatch.
//!
//! Order (docs/design.md §5): one Redis round trip claims the delivery identity with
//! `SET NX EX`, writes the initial status record and swaps the conversation's
//! last task id; then the task and its acknowledgement are published and the
//! task is confirmed; only then does the caller answer 2xx (the acknowledgement's
//! confirm is awaited in the background, see [`publish_pair`]). When publishing
//! fails, the claim is kept but marked unconfirmed (`?<task id>`): the
//! provider's retry of the same delivery is accepted and publishes the *same*
//! task id again, so a task is never lost to a stale dedup key, and a failed
//! publish that reached the queue after all (its confirm lost with the
//! connection) is the same task downstream, deduplicated by the stages'
//! completion marks and the dispatcher's reply ledger: one answer, not two.
//! When Redis is down, dedup degrades loudly and the request is still accepted.
//! When the records Redis is up but refuses the claim (full under `noeviction`,
//! `MISCONF`, `READONLY`), the answer is 503 with `Retry-After` and no task: a
//! task published without its claim could be published again by the retry
//! (README "Redis: records and caches").

use crate::error::IngestError;
use crate::routing::{RouteInput, Routing, extract_hints};
use crate::{AppState, SharedPublisher};
use contexten_broker::{BrokerError, Delivery, Publisher, Store, redis_error};
use contexten_envelope::{
    Conversation, Extra, Hints, Names, Priority, ReplyKind, ReplyTarget, RepositoryRef, Request,
    Source, SourceKind, Stage, Strategy, TaskEnvelope, TaskId, TaskResult, now_ms,
};
use contexten_telemetry::metric;
use contexten_trust::policy::{RepoId, RepoPattern, Scope};
use std::time::Duration;

/// The status record field holding ingest's summary of the task (JSON: source,
/// strategy, strategy_rule, priority, conversation, correlation_id, and for
/// API tasks `api_token`, the name of the token that created it: only that
/// token or an `admin` token may read the task).
pub const SUMMARY_FIELD: &str = "summary";

/// How long the status record written here lives (the runtime keeps it as long).
const STATUS_TTL_SECS: u64 = 7 * 24 * 3600;

/// Hops: the acknowledgement is the task's first message and the task its
/// second, so every later message of the task (hop ≥ 2) has a distinct
/// `message_id` and completion mark, including a final answer at dispatch.
pub const ACK_HOP: u32 = 0;
/// See [`ACK_HOP`].
pub const TASK_HOP: u32 = 1;

/// A recognised request, before routing.
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: SourceKind,
    /// The provider's delivery identity (the dedup key), if it has one.
    pub delivery_id: Option<String>,
    pub requested_by: Option<String>,
    pub reply_to: ReplyTarget,
    pub text: String,
    pub repository: Option<RepositoryRef>,
    pub labels: Vec<String>,
    pub explicit: Option<(Strategy, String)>,
    pub priority: Option<Priority>,
    /// `github:owner/repo#7`, `slack:C1:1712.0001`, `linear:<issue id>`.
    pub conversation: Option<String>,
    pub source_extra: Extra,
    pub request_extra: Extra,
    /// Paths and symbols named explicitly (API), ahead of those found in the text.
    pub hints: Hints,
    /// Who asked, for the repository policy and the per-requester limit.
    pub requester: Option<Requester>,
    /// Whether [`Draft::repository`] was named by the requester (message text,
    /// API field), so the policy must allow it, rather than being the GitHub
    /// event's own repository or one an operator mapped to the channel or team.
    pub repository_named: bool,
    /// A repository a GitHub comment names besides its own: used instead of
    /// the event's own only where the policy allows it (never refused: the
    /// comment may just link to another project).
    pub github_named_repository: Option<String>,
    /// Set when the request is refused before any work: it is answered at once
    /// with this reason instead of running (see [`Refusal`]).
    pub refusal: Option<Refusal>,
}

/// Who asked, as the repository policy scopes requesters.
#[derive(Debug, Clone, PartialEq)]
pub enum Requester {
    Github {
        owner: String,
        installation: Option<u64>,
        repository: RepoId,
    },
    Slack {
        team: String,
        channel: String,
    },
    Linear {
        organization: String,
        team: Option<String>,
    },
    Api {
        token: String,
        repositories: Vec<RepoPattern>,
    },
}

impl Requester {
    /// The policy's view of this requester.
    pub fn scope(&self) -> Scope<'_> {
        match self {
            Requester::Github {
                owner,
                installation,
                repository,
            } => Scope::Github {
                owner,
                installation: *installation,
                own_repository: repository,
            },
            Requester::Slack { team, channel } => Scope::Slack {
                team,
                channel: Some(channel),
            },
            Requester::Linear { organization, team } => Scope::Linear {
                organization,
                team_id: team.as_deref(),
                team_key: None,
            },
            Requester::Api {
                token,
                repositories,
            } => Scope::Api {
                token,
                token_repositories: repositories,
            },
        }
    }
}

/// A request answered without running: the reason code and the sentence the
/// requester reads (never internal detail).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Draft {
    /// A draft with only the essentials set.
    pub fn new(kind: SourceKind, reply_to: ReplyTarget, text: impl Into<String>) -> Self {
        Draft {
            kind,
            delivery_id: None,
            requested_by: None,
            reply_to,
            text: text.into(),
            repository: None,
            labels: Vec::new(),
            explicit: None,
            priority: None,
            conversation: None,
            source_extra: Extra::new(),
            request_extra: Extra::new(),
            hints: Hints::default(),
            requester: None,
            repository_named: false,
            github_named_repository: None,
            refusal: None,
        }
    }

    /// Refuses the request: it is answered with `refusal` and its repository
    /// is dropped so nothing downstream can fetch it.
    pub fn refuse(&mut self, refusal: Refusal) {
        self.repository = None;
        self.refusal = Some(refusal);
    }

    /// The envelope for this draft, routed by `routing`.
    pub fn into_envelope(self, routing: &Routing) -> TaskEnvelope {
        let mut hints = extract_hints(&self.text);
        // A file the requester pointed at (a review comment's `path`) is the
        // target, whatever the text names.
        if let Some(target) = self.hints.target_file {
            hints.target_file = Some(target);
        }
        for (given, found) in [
            (self.hints.paths, &mut hints.paths),
            (self.hints.symbols, &mut hints.symbols),
        ] {
            let mut merged = given;
            for f in found.drain(..) {
                if !merged.contains(&f) {
                    merged.push(f);
                }
            }
            *found = merged;
        }
        let decision = routing.decide(&RouteInput {
            kind: self.kind.clone(),
            text: &self.text,
            explicit: self.explicit.clone(),
            labels: &self.labels,
            has_repository: self.repository.is_some(),
            hints: &hints,
        });
        let source = Source {
            kind: self.kind,
            delivery_id: self.delivery_id,
            requested_by: self.requested_by,
            reply_to: self.reply_to,
            extra: self.source_extra,
        };
        let mut env = TaskEnvelope::new(
            source,
            Request {
                text: self.text,
                repository: self.repository,
                hints,
                extra: self.request_extra,
            },
        );
        env.strategy = decision.strategy;
        env.strategy_rule = Some(decision.rule);
        env.priority = self.priority.unwrap_or(decision.priority);
        env.conversation = self.conversation.map(|id| Conversation {
            id,
            previous_task_id: None,
        });
        env.hop = TASK_HOP;
        if let Some(refusal) = self.refusal {
            env.result = Some(TaskResult::failure(
                Stage::Ingest,
                refusal.reason,
                refusal.message,
            ));
            env.reply = Some(ReplyKind::Failure);
        }
        env
    }
}

/// The queue a new envelope goes to: its first stage, or dispatch for a
/// request refused at the door.
pub fn first_stage(env: &TaskEnvelope) -> Stage {
    match env.reply {
        Some(ReplyKind::Failure) => Stage::Dispatch,
        _ => env.strategy.first_stage(),
    }
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// A new task, published with its acknowledgement.
    Created(Box<TaskEnvelope>),
    /// The delivery was seen before; `task_id` is the task it created.
    Duplicate { task_id: Option<String> },
}

/// Claims the delivery, records the task, publishes task and acknowledgement.
pub async fn admit(
    state: &AppState,
    mut env: TaskEnvelope,
    received_at_ms: u64,
) -> Result<Admission, IngestError> {
    let publisher = current_publisher(&state.publisher, state.retry_after).await?;
    let dedup_key = env
        .source
        .delivery_id
        .as_ref()
        .map(|id| dedup_key(&state.names, &env.source.kind, id));
    let conversation_key = env
        .conversation
        .as_ref()
        .map(|c| conversation_key(&state.names, &c.id));
    let mut claim = Claim {
        dedup_key: dedup_key.clone(),
        status_key: state.names.status_key(env.task_id),
        conversation_key: conversation_key.clone(),
    };
    let mut recorded = true;
    let mut acquired = claim
        .acquire(&state.store, &env, received_at_ms, state)
        .await;
    if let Ok(ClaimResult::Unconfirmed(earlier)) = &acquired {
        // A retry after a failed publish: it carries on the earlier task id.
        match earlier.parse::<TaskId>() {
            Ok(task_id) => {
                tracing::info!(%task_id, "retry of a delivery whose publish failed; publishing its task again");
                env.task_id = task_id;
                claim.status_key = state.names.status_key(task_id);
                acquired = claim
                    .acquire(&state.store, &env, received_at_ms, state)
                    .await;
            }
            Err(_) => acquired = Err(BrokerError::Redis(format!("malformed claim {earlier:?}"))),
        }
    }
    match acquired {
        Ok(ClaimResult::Duplicate(task_id)) => return Ok(Admission::Duplicate { task_id }),
        Ok(ClaimResult::Unconfirmed(_)) => {
            // Claimed and failed again by a concurrent retry between the two
            // round trips: let the provider try once more.
            return Err(IngestError::BrokerDown {
                retry_after: state.retry_after,
            });
        }
        Ok(ClaimResult::Claimed { previous }) => {
            if let (Some(c), Some(prev)) = (env.conversation.as_mut(), previous) {
                c.previous_task_id = prev.parse::<TaskId>().ok();
            }
        }
        Err(error) if error.is_refused() => {
            tracing::warn!(%error, task_id = %env.task_id, "the records redis refused the delivery claim; answering 503");
            return Err(IngestError::StoreDown {
                retry_after: state.retry_after,
            });
        }
        Err(error) => {
            recorded = false;
            tracing::warn!(%error, task_id = %env.task_id, "dedup and status record skipped");
            metric::redis_degraded("dedup");
        }
    }
    match publish_pair(state, &publisher, &env).await {
        Ok(()) => {
            metric::ingest_task(env.source.kind.as_str(), env.strategy.as_str());
            tracing::info!(
                task_id = %env.task_id,
                source = env.source.kind.as_str(),
                strategy = env.strategy.as_str(),
                rule = env.strategy_rule.as_deref().unwrap_or(""),
                priority = env.priority.as_str(),
                "task accepted"
            );
            env.hop = TASK_HOP;
            Ok(Admission::Created(Box::new(env)))
        }
        Err(error) => {
            tracing::warn!(%error, task_id = %env.task_id, "publish failed; the delivery's retry will publish this task again");
            if recorded && let Err(error) = claim.mark_unconfirmed(&state.store, &env).await {
                // The retry would be refused as a duplicate: say so loudly.
                tracing::error!(%error, task_id = %env.task_id, "could not mark the delivery claim unconfirmed");
                metric::redis_degraded("dedup_release");
            }
            Err(IngestError::BrokerDown {
                retry_after: state.retry_after,
            })
        }
    }
}

/// The confirmed publisher, or 503 while the broker is away or blocks
/// publishers (a memory or disk alarm: a publish would only wait out
/// `PUBLISH_CONFIRM_TIMEOUT_MS`, so the delivery is not even claimed).
pub async fn current_publisher(
    slot: &SharedPublisher,
    retry_after: Duration,
) -> Result<Publisher, IngestError> {
    slot.read()
        .await
        .clone()
        .filter(|publisher| !publisher.is_blocked())
        .ok_or(IngestError::BrokerDown { retry_after })
}

/// Publishes the task and, beside it, its acknowledgement, in one write on one
/// channel (the broker reads both at once). Only the task's confirm is
/// awaited: the 2xx promises that the task is persisted, while the "on it"
/// reply is a courtesy (a final answer follows either way). Its confirm
/// usually arrives first (it is not written to disk) and is noted here; one
/// still missing when the task is confirmed is awaited in the background, and a
/// lost one is logged and counted. For the same reason the acknowledgement is
/// not persisted: after a broker restart it would only be late; unwritten, it
/// saves RabbitMQ a disk write and sync per webhook (docs/design.md §5 holds for the
/// task).
async fn publish_pair(
    state: &AppState,
    publisher: &Publisher,
    env: &TaskEnvelope,
) -> Result<(), BrokerError> {
    if env.reply == Some(ReplyKind::Failure) {
        // A refusal is its own answer: no acknowledgement, nothing else runs.
        return publisher
            .publish_together(vec![
                publisher
                    .message(Stage::Dispatch, env, Delivery::Persistent)
                    .await?,
            ])
            .await?
            .into_iter()
            .next()
            .ok_or(BrokerError::Nacked)?
            .confirmed()
            .await;
    }
    let mut ack = env.clone();
    ack.hop = ACK_HOP;
    ack.reply = Some(ReplyKind::Ack);
    let messages = vec![
        publisher
            .message(env.strategy.first_stage(), env, Delivery::Persistent)
            .await?,
        publisher
            .message(Stage::Dispatch, &ack, Delivery::Transient)
            .await?,
    ];
    let mut pending = publisher.publish_together(messages).await?.into_iter();
    let (Some(task), Some(ack_confirm)) = (pending.next(), pending.next()) else {
        return Err(BrokerError::Nacked);
    };
    let task = task.confirmed();
    tokio::pin!(task);
    let mut ack_confirm = Box::pin(ack_confirm.confirmed());
    let mut ack_result = None;
    let task_result = loop {
        tokio::select! {
            biased;
            result = &mut task => break result,
            result = &mut ack_confirm, if ack_result.is_none() => ack_result = Some(result),
        }
    };
    let task_id = env.task_id;
    match ack_result {
        Some(result) => note_ack(task_id, result),
        None => {
            state
                .background
                .spawn(async move { note_ack(task_id, ack_confirm.await) });
        }
    }
    task_result
}

fn note_ack(task_id: TaskId, result: Result<(), BrokerError>) {
    if let Err(error) = result {
        tracing::warn!(%error, %task_id, "acknowledgement not published");
        metric::ingest_ack_lost();
    }
}

/// Redis: a provider delivery identity.
pub fn dedup_key(names: &Names, kind: &SourceKind, id: &str) -> String {
    names.redis_key(&["ingest", "dedup", kind.as_str(), id])
}

/// Redis: the last task of a conversation.
pub fn conversation_key(names: &Names, conversation: &str) -> String {
    names.redis_key(&["ingest", "conversation", conversation])
}

struct Claim {
    dedup_key: Option<String>,
    status_key: String,
    conversation_key: Option<String>,
}

enum ClaimResult {
    Claimed {
        previous: Option<String>,
    },
    Duplicate(Option<String>),
    /// The delivery's earlier attempt failed to publish this task id.
    Unconfirmed(String),
}

/// One round trip: claim the delivery (or report its task, or the task of an
/// unconfirmed earlier attempt: `{2, id}`, to be claimed again under that id),
/// write the status record, swap the conversation's last task.
const ACQUIRE: &str = r#"
if ARGV[2] == '1' then
  local seen = redis.call('GET', KEYS[1])
  if seen and seen ~= '?' .. ARGV[1] then
    if string.sub(seen, 1, 1) == '?' then return {2, string.sub(seen, 2)} end
    return {0, seen}
  end
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
end
local previous = ''
if ARGV[4] == '1' then
  previous = redis.call('GET', KEYS[3]) or ''
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[5])
end
redis.call('HSET', KEYS[2], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1, previous}
"#;

/// Undoes [`ACQUIRE`] for a task whose publish failed, touching only what
/// still belongs to it, except that the delivery stays claimed as unconfirmed
/// (`?<task id>`) so its retry publishes the same task id.
const MARK_UNCONFIRMED: &str = r#"
if ARGV[2] == '1' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], '?' .. ARGV[1], 'KEEPTTL')
end
if ARGV[3] == '1' and redis.call('GET', KEYS[3]) == ARGV[1] then
  if ARGV[4] == '' then redis.call('DEL', KEYS[3])
  else redis.call('SET', KEYS[3], ARGV[4], 'KEEPTTL') end
end
redis.call('DEL', KEYS[2])
return 1
"#;

impl Claim {
    fn keys(&self) -> [&str; 3] {
        // Unused keys still need a name in the script's KEYS table.
        [
            self.dedup_key.as_deref().unwrap_or(&self.status_key),
            &self.status_key,
            self.conversation_key.as_deref().unwrap_or(&self.status_key),
        ]
    }

    async fn acquire(
        &self,
        store: &Store,
        env: &TaskEnvelope,
        received_at_ms: u64,
        state: &AppState,
    ) -> Result<ClaimResult, BrokerError> {
        let now = now_ms();
        let timing = serde_json::json!({"started_at_ms": received_at_ms, "finished_at_ms": now});
        let first = first_stage(env);
        // What the runtime maintains (state, stage, updated_at_ms, timing:<stage>)
        // plus what only ingest knows, in one `summary` field to keep the write small.
        let summary = serde_json::json!({
            "source": env.source.kind,
            "strategy": env.strategy,
            "strategy_rule": env.strategy_rule,
            "priority": env.priority,
            "conversation": env.conversation.as_ref().map(|c| &c.id),
            "correlation_id": env.correlation_id,
            "api_token": (env.source.kind == SourceKind::API)
                .then_some(env.source.requested_by.as_deref())
                .flatten(),
        });
        let fields: [(&str, String); 6] = [
            ("state", format!("queued:{}", first.as_str())),
            ("stage", Stage::Ingest.as_str().to_owned()),
            ("created_at_ms", env.created_at_ms.to_string()),
            ("updated_at_ms", now.to_string()),
            (SUMMARY_FIELD, summary.to_string()),
            ("timing:ingest", timing.to_string()),
        ];
        let script = &state.scripts.acquire;
        let mut invocation = script.prepare_invoke();
        for key in self.keys() {
            invocation.key(key);
        }
        invocation
            .arg(env.task_id.to_string())
            .arg(if self.dedup_key.is_some() { "1" } else { "0" })
            .arg(state.dedup_ttl.as_secs())
            .arg(if self.conversation_key.is_some() {
                "1"
            } else {
                "0"
            })
            .arg(state.conversation_ttl.as_secs())
            .arg(STATUS_TTL_SECS);
        for (field, value) in fields {
            invocation.arg(field).arg(value);
        }
        let mut connection = store.connection().await?;
        let (claimed, value): (i64, String) =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| BrokerError::RedisTimeout(REDIS_TIMEOUT))?
                .map_err(redis_error)?;
        if claimed == 1
            && let Err(error) = store.replicated().await
        {
            // A new claim is acknowledged to the caller only once on replicas
            // when REDIS_WAIT_REPLICAS asks (docs/operations.md "Running on a
            // cluster"). Not there in time: the caller hears 503, and the
            // claim is reopened so that its retry publishes the task instead
            // of meeting a claim whose task was never published.
            if let Err(error) = self.mark_unconfirmed(store, env).await {
                tracing::error!(%error, task_id = %env.task_id, "could not reopen an unreplicated delivery claim");
            }
            return Err(error);
        }
        let value = (!value.is_empty()).then_some(value);
        Ok(match claimed {
            1 => ClaimResult::Claimed { previous: value },
            2 => ClaimResult::Unconfirmed(value.unwrap_or_default()),
            _ => ClaimResult::Duplicate(value),
        })
    }

    async fn mark_unconfirmed(&self, store: &Store, env: &TaskEnvelope) -> Result<(), BrokerError> {
        let previous = env
            .conversation
            .as_ref()
            .and_then(|c| c.previous_task_id)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let script = redis::Script::new(MARK_UNCONFIRMED);
        let mut invocation = script.prepare_invoke();
        for key in self.keys() {
            invocation.key(key);
        }
        invocation
            .arg(env.task_id.to_string())
            .arg(if self.dedup_key.is_some() { "1" } else { "0" })
            .arg(if self.conversation_key.is_some() {
                "1"
            } else {
                "0"
            })
            .arg(previous);
        let mut connection = store.connection().await?;
        let _: i64 = tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| BrokerError::RedisTimeout(REDIS_TIMEOUT))?
            .map_err(redis_error)?;
        Ok(())
    }
}

/// Upper bound for ingest's own Redis round trips (a provider's deadline is 3 s
/// for Slack, so this stays well below).
const REDIS_TIMEOUT: Duration = Duration::from_millis(800);

/// The Lua scripts, loaded once (`EVALSHA` after the first call).
pub struct Scripts {
    pub acquire: redis::Script,
    /// [`crate::replay`]'s claim of a signed body.
    pub claim_body: redis::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            acquire: redis::Script::new(ACQUIRE),
            claim_body: redis::Script::new(crate::replay::CLAIM_BODY),
        }
    }
}
