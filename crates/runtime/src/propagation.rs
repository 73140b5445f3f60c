//! The trace context across the gRPC hop: W3C Trace Context (`traceparent`, `tracestate`)
//! written into a request's headers by the client and read back by the server, so that one SMTP
//! delivery is one trace from the front-end through the mailbox service to NATS and S3.
//!
//! [`crate::telemetry::init`] installs the propagator for the whole process;
//! [`crate::rpc::Balanced`] injects on every call, and the mailbox service's server makes its
//! request span a child of what [`extract`] returns. Without trace export (no OTLP endpoint) spans
//! carry no OpenTelemetry context, so nothing is written and nothing costs more than a lookup.

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes W3C Trace Context the process's propagator. Idempotent.
pub fn install() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// Writes the context of the current `tracing` span into `headers`.
pub fn inject(headers: &mut http::HeaderMap) {
    inject_span(&tracing::Span::current(), headers);
}

/// Writes the context of `span` into `headers` (a client's own span of the call, say).
pub fn inject_span(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// The remote context that `headers` carry: an empty context when they carry none (or one
/// that does not parse).
pub fn extract(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Makes `span` a child of the remote context that `headers` carry, if they carry one. Call it
/// on a span just created, before it is entered: a started span keeps its parent.
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    let context = extract(headers);
    if context.span().span_context().is_remote() {
        // Fails only when trace export is off (no OpenTelemetry layer), where it changes nothing.
        let _ = span.set_parent(context);
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    #[test]
    fn a_context_goes_through_headers_and_back() {
        install();
        let sent = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let mut headers = http::HeaderMap::new();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&Context::new().with_remote_span_context(sent.clone()), &mut HeaderInjector(&mut headers))
        });
        assert_eq!(headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let got = extract(&headers);
        let got = got.span().span_context().clone();
        assert!(got.is_remote());
        assert_eq!((got.trace_id(), got.span_id()), (sent.trace_id(), sent.span_id()));
    }

    #[test]
    fn no_headers_no_context() {
        install();
        assert!(!extract(&http::HeaderMap::new()).span().span_context().is_valid());
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static("garbage"));
        assert!(!extract(&headers).span().span_context().is_valid());
        // Without an OpenTelemetry layer the current span has no context to send.
        let mut headers = http::HeaderMap::new();
        inject(&mut headers);
        assert!(headers.is_empty());
    }
}
