//! W3C trace context across the queues: the publisher injects the current span's
//! context into message headers, the consumer makes it the parent of its span.

use opentelemetry::propagation::{Extractor, Injector};
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a HashMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The trace context headers (`traceparent`, `tracestate`) of `span`.
pub fn inject(span: &tracing::Span) -> HashMap<String, String> {
    let mut headers = HashMap::new();
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MapInjector(&mut headers))
    });
    headers
}

/// Makes the context in `headers` the parent of `span` (no-op without a valid one).
pub fn adopt_parent(span: &tracing::Span, headers: &HashMap<String, String>) {
    if headers.is_empty() {
        return;
    }
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&MapExtractor(headers)));
    let _ = span.set_parent(parent);
}

/// The trace id in a `traceparent` value (`00-<trace>-<span>-<flags>`).
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let _version = parts.next()?;
    let trace = parts.next()?;
    (trace.len() == 32).then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_span_keeps_the_parent_trace() {
        crate::init_for_tests();
        let incoming = HashMap::from([(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        )]);
        let span = tracing::info_span!("handle");
        adopt_parent(&span, &incoming);
        let outgoing = inject(&span);
        let traceparent = outgoing.get("traceparent").expect("traceparent injected");
        assert_eq!(
            trace_id_of(traceparent),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(
            !traceparent.contains("00f067aa0ba902b7"),
            "a new span id: {traceparent}"
        );
    }
}
