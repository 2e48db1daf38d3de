//! Traces across Sluice's processes: spans exported to an OpenTelemetry collector over OTLP
//! (gRPC) when an endpoint is configured, and the W3C trace context (`traceparent`,
//! `tracestate`) carried by every gRPC call between them, so that one trace follows a change
//! from the API call through the controller and the worker into the connector process.
//!
//! Spans are `tracing` spans; [`otlp_layer`] is the subscriber layer that exports them. Without
//! it every function here is a no-op: there is no context to carry.

use std::collections::HashMap;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue, Request};
use tonic::metadata::MetadataMap;
use tracing::instrument::{Instrument as _, Instrumented};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::Layer;

/// The variable a worker sets for its connector processes when it exports traces: the
/// collector's OTLP endpoint, where the connector's SDK sends its own spans.
pub const ENV_OTLP_ENDPOINT: &str = "SLUICE_OTLP_ENDPOINT";

/// How long finished spans wait before they are sent (OpenTelemetry's default is 5 s; a
/// connector process may live less than that between restarts).
const EXPORT_DELAY: Duration = Duration::from_millis(500);

static ENDPOINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static PROVIDER: std::sync::OnceLock<SdkTracerProvider> = std::sync::OnceLock::new();

/// Sends the spans finished so far, for a process about to exit without dropping its
/// [`Exporter`].
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// The collector this process exports to, once [`otlp_layer`] made its layer.
pub fn endpoint() -> Option<&'static str> {
    ENDPOINT.get().map(String::as_str)
}

/// Sends finished spans to the collector; dropping it sends what is left and stops.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: traces not all sent to the OTLP collector: {e}");
        }
    }
}

/// The layer that exports the process's spans to the OTLP collector at `endpoint` (gRPC, e.g.
/// `http://127.0.0.1:4317`) as `service`, with `attributes` on its resource. Call it inside a
/// Tokio runtime, which must outlive the [`Exporter`]: the exporter's connection runs on it.
pub fn otlp_layer<S>(
    endpoint: &str,
    service: &str,
    attributes: impl IntoIterator<Item = (&'static str, String)>,
) -> anyhow::Result<(impl Layer<S>, Exporter)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("OTLP exporter for {endpoint}"))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_DELAY)
                .build(),
        )
        .build();
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .with_attributes(attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("sluice");
    // The exporter's own transport must not trace itself into what it exports.
    let quiet = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(quiet);
    let _ = ENDPOINT.set(endpoint.to_string());
    let _ = PROVIDER.set(provider.clone());
    Ok((layer, Exporter { provider }))
}

/// The current span's trace context as W3C keys and values; empty when nothing is traced.
pub fn current() -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut carrier);
    carrier
}

/// Makes the trace context in `carrier` (as [`current`] gave it) the parent of `span`.
pub fn follow(span: &Span, carrier: &HashMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    let _ = span.set_parent(TraceContextPropagator::new().extract(carrier));
}

/// Makes the trace context of a request's `headers` the parent of `span`.
pub fn follow_headers(span: &Span, headers: &HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let _ = span.set_parent(TraceContextPropagator::new().extract(&Headers(headers)));
}

/// Puts the current span's trace context into a call's `metadata`.
pub fn inject_metadata(metadata: &mut MetadataMap) {
    for (key, value) in current() {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            metadata.insert(key, value);
        }
    }
}

/// Puts the current span's trace context into a request's `headers`.
pub fn inject_headers(headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut Inject(headers));
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Inject<'a>(&'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// A client transport (a tonic `Channel`) whose requests carry the trace context of the span
/// they are made in.
#[derive(Debug, Clone)]
pub struct Propagate<S>(pub S);

impl<S, B> tower::Service<Request<B>> for Propagate<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        inject_headers(request.headers_mut());
        self.0.call(request)
    }
}

/// A server layer making one span per request (named by its method and path), the child of the
/// trace context the request carries. Requests for which `quiet` says true (heartbeats, health
/// checks) get none.
#[derive(Clone, Copy)]
pub struct ServerSpans {
    quiet: fn(&str) -> bool,
}

impl ServerSpans {
    pub fn new(quiet: fn(&str) -> bool) -> ServerSpans {
        ServerSpans { quiet }
    }
}

impl<S> tower::Layer<S> for ServerSpans {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            quiet: self.quiet,
        }
    }
}

/// See [`ServerSpans`].
#[derive(Clone)]
pub struct Traced<S> {
    inner: S,
    quiet: fn(&str) -> bool,
}

impl<S, B> tower::Service<Request<B>> for Traced<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        if (self.quiet)(path) {
            return self.inner.call(request).instrument(Span::none());
        }
        let grpc = request
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let name = match grpc {
            // As OpenTelemetry names gRPC spans: package.Service/Method.
            true => path.trim_start_matches('/').to_string(),
            false => format!("{} {path}", request.method()),
        };
        let span = tracing::info_span!("request", otel.name = %name, otel.kind = "server");
        follow_headers(&span, request.headers());
        let future = span.in_scope(|| self.inner.call(request));
        future.instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[tokio::test]
    async fn a_context_carried_through_headers_parents_the_span_on_the_other_side() {
        // A collector nobody listens at: spans are made and kept, never needed to arrive.
        let (layer, _exporter) =
            otlp_layer("http://127.0.0.1:9", "test", []).expect("layer builds");
        let subscriber = tracing_subscriber::registry().with(layer);
        let _default = tracing::subscriber::set_default(subscriber);
        assert!(current().is_empty(), "no span, no context");

        let caller = tracing::info_span!("caller");
        let mut headers = HeaderMap::new();
        caller.in_scope(|| inject_headers(&mut headers));
        let sent = headers["traceparent"].to_str().unwrap().to_string();
        let trace_id = caller.context().span().span_context().trace_id();
        assert!(sent.contains(&trace_id.to_string()), "{sent}");

        let callee = tracing::info_span!("callee");
        follow_headers(&callee, &headers);
        use opentelemetry::trace::TraceContextExt as _;
        assert_eq!(callee.context().span().span_context().trace_id(), trace_id);
        let carried = callee.in_scope(current);
        assert!(carried["traceparent"].contains(&trace_id.to_string()));
        // Nothing listens there: dropping would wait for the export to time out.
        std::mem::forget(_exporter);
    }
}
