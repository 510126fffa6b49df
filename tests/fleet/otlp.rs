//! An in-process OTLP/HTTP trace receiver on 127.0.0.1: the fleet's binaries
//! export their spans to it (`OTEL_EXPORTER_OTLP_ENDPOINT`, see [`OtlpReceiver::fleet_env`])
//! and a test reads them back decoded, with the `service.name` of the process
//! that sent each.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use std::collections::HashMap;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The receiver (a wiremock server answering `POST /v1/traces` with an empty,
/// valid `ExportTraceServiceResponse`).
pub struct OtlpReceiver {
    server: MockServer,
}

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The `service.name` resource attribute of the exporting process.
    pub service: String,
    pub name: String,
    /// OTLP's span kind: 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// Lowercase hex, as in `traceparent` and in log lines.
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub start_ns: u64,
    pub attributes: HashMap<String, String>,
    pub events: Vec<String>,
}

impl ReceivedSpan {
    /// An attribute's value as text (`""` when absent).
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }
}

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const PRODUCER: i32 = 4;
pub const CONSUMER: i32 = 5;

impl OtlpReceiver {
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/traces"))
            .respond_with(
                ResponseTemplate::new(200).insert_header("content-type", "application/x-protobuf"),
            )
            .mount(&server)
            .await;
        OtlpReceiver { server }
    }

    /// The variables that make a fleet export here: the endpoint, and a short
    /// batch delay so spans arrive within a test's patience.
    pub fn fleet_env(&self) -> Vec<(String, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), self.server.uri()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ]
    }

    /// Every span received so far (bodies that do not decode are skipped).
    pub async fn spans(&self) -> Vec<ReceivedSpan> {
        let requests = self.server.received_requests().await.unwrap_or_default();
        let mut spans = Vec::new();
        for request in requests {
            let Ok(export) = ExportTraceServiceRequest::decode(request.body.as_slice()) else {
                continue;
            };
            for resource_spans in export.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| attributes(&r.attributes).remove("service.name"))
                    .unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        spans.push(ReceivedSpan {
                            service: service.clone(),
                            name: span.name,
                            kind: span.kind,
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            start_ns: span.start_time_unix_nano,
                            attributes: attributes(&span.attributes),
                            events: span.events.into_iter().map(|e| e.name).collect(),
                        });
                    }
                }
            }
        }
        spans
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
