//! CLIENT spans for outbound HTTP calls (OpenTelemetry HTTP conventions, see
//! docs/design.md §8): every client sends through [`TracedSend::send_traced`],
//! so the LLM, Codegen and provider calls appear in the task's trace with their
//! method, host, status and, for a request sent again, its resend count.

use std::future::Future;
use tracing::Instrument as _;

tokio::task_local! {
    /// How many times the caller has sent this request before (set by a
    /// caller that retries, read by [`TracedSend::send_traced`]).
    static RESENDS: u32;
}

/// Runs `call` with its client spans marked as the `resends`-th resend of the
/// same request (`http.request.resend_count`; recorded only when above 0).
pub async fn resend<F: Future>(resends: u32, call: F) -> F::Output {
    RESENDS.scope(resends, call).await
}

/// `send` with a CLIENT span around it.
pub trait TracedSend {
    /// Sends the request inside a span named `<METHOD> <peer>` (the peer is the
    /// service called: `github`, `llm`, ...). The URL's path and query stay out
    /// of the span: a callback URL may carry a token.
    fn send_traced(
        self,
        peer: &'static str,
    ) -> impl Future<Output = Result<reqwest::Response, reqwest::Error>> + Send;
}

impl TracedSend for reqwest::RequestBuilder {
    async fn send_traced(self, peer: &'static str) -> Result<reqwest::Response, reqwest::Error> {
        let (client, request) = self.build_split();
        let request = request?;
        let method = request.method().as_str().to_owned();
        let url = request.url();
        let span = tracing::info_span!(
            "http_client",
            otel.name = %format_args!("{method} {peer}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            server.address = url.host_str().unwrap_or_default(),
            server.port = url.port_or_known_default().unwrap_or_default(),
            peer.service = peer,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            http.request.resend_count = tracing::field::Empty,
        );
        if let Some(resends) = RESENDS.try_with(|n| *n).ok().filter(|n| *n > 0) {
            span.record("http.request.resend_count", resends);
        }
        let result = client.execute(request).instrument(span.clone()).await;
        match &result {
            Ok(response) => {
                let status = response.status();
                span.record("http.response.status_code", status.as_u16());
                if status.is_client_error() || status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", status.as_str());
                }
            }
            Err(error) => {
                span.record("otel.status_code", "ERROR");
                let kind = if error.is_timeout() {
                    "timeout"
                } else if error.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                span.record("error.type", kind);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::{Context, SubscriberExt};

    /// The fields recorded on spans after they were created.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<(String, String)>>>);

    impl tracing::field::Visit for Recorded {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            let mut fields = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            fields.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Recorded {
        fn on_record(
            &self,
            _span: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _ctx: Context<'_, S>,
        ) {
            values.record(&mut self.clone());
        }
    }

    #[tokio::test]
    async fn a_resent_request_says_which_resend_it_is_and_a_first_send_says_nothing() {
        contexten_tls::install_crypto_provider();
        let recorded = Recorded::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(recorded.clone()));
        let client = contexten_tls::http_client(contexten_tls::HttpTimeouts::new(
            std::time::Duration::from_secs(2),
        ))
        .build()
        .unwrap();
        // Nothing listens on port 1 of loopback: each call fails at once, and
        // its span is still made and recorded.
        let resent = resend(2, client.get("http://127.0.0.1:1/").send_traced("test")).await;
        let first = client.get("http://127.0.0.1:1/").send_traced("test").await;
        assert!(resent.is_err() && first.is_err());
        let fields = recorded.0.lock().unwrap().clone();
        let resends: Vec<&str> = fields
            .iter()
            .filter(|(name, _)| name == "http.request.resend_count")
            .map(|(_, value)| value.as_str())
            .collect();
        assert_eq!(resends, ["2"], "{fields:?}");
        let errors = fields
            .iter()
            .filter(|(name, _)| name == "error.type")
            .count();
        assert_eq!(errors, 2, "both calls are marked failed: {fields:?}");
    }
}
