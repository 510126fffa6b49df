//! Small clients for the platforms the fleet answers on (docs/design.md §10, docs/platforms.md
//! §2.2, §3.2, §4.2), each with a configurable base URL so tests point them at
//! local fakes speaking the real wire format.
//!
//! - [`github::GithubClient`]: issue/PR comments, reactions, the marker search
//!   used to reconcile an uncertain post; auth by token or as a GitHub App (RS256
//!   JWT exchanged for an installation token, cached until shortly before it
//!   expires).
//! - [`linear::LinearClient`]: GraphQL `commentCreate` (threaded with `parentId`,
//!   with a client-chosen comment id) and `comment(id)`; raw API key or OAuth
//!   bearer.
//! - [`slack::SlackClient`]: `chat.postMessage` in a thread (checking `ok`, not
//!   the status), `reactions.add`, `conversations.replies` to find a message by
//!   its metadata.
//! - [`gitlab::GitlabClient`]: notes on issues and merge requests (replies
//!   in a discussion), award emoji, and the newest-first note listing used to
//!   find a marker; `PRIVATE-TOKEN` auth.
//! - [`callback::CallbackClient`] and [`callback::WebhookSigner`]: JSON POSTs
//!   signed in the Standard Webhooks style (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature: v1,<base64>`), sent only where the outbound URL guard
//!   of `contexten-trust` allows (the URL is the requester's).
//!
//! Every failure is a [`ProviderError`] that says whether to wait (rate limited,
//! with the provider's advertised delay), give up (rejected, with a snake_case
//! code, or a destination the outbound guard refused) or try again
//! (unavailable, and whether the request may have taken effect). The dispatcher maps these to broker outcomes; ingest's redelivery
//! command can reuse the GitHub client.

pub mod callback;
mod error;
pub mod github;
pub mod gitlab;
mod http;
pub mod linear;
pub mod slack;
pub use contexten_envelope::time;

pub use error::ProviderError;
pub use http::{HttpSettings, retry_after_from};
