//! CLIENT spans for outbound HTTP calls (OpenTelemetry HTTP conventions, see
//! docs/design.md §8): every client sends through [`TracedSend::send_traced`],
//! so the LLM, Codegen and provider calls appear in the task's trace with their
//! method, host and status.

use std::future::Future;
use tracing::Instrument as _;

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
        );
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
