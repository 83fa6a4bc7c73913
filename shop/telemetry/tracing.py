"""OpenTelemetry traces, exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set (off otherwise: no SDK
work at all on the hot paths, `traceparent()` answers None).

Flask requests, SQLAlchemy statements, Redis commands and outgoing HTTP (requests: Stripe's SDK and SendGrid's
client go through it or urllib; httpx: Typesense) become spans. The context crosses process boundaries as a W3C
`traceparent` string stored with the work:

- an outbox row (`outbox_job.trace_parent`, written with the row) -> the RQ job's meta -> the worker's job span;
- an event row -> the stream message (a Redis Streams field, a Kafka header) -> the consumer's span per event;
- a payment (`payment.trace_parent`, the checkout's) -> the provider's webhook that settles it, whose work joins
  the checkout's trace (the webhook's own request span is linked to it).

So one checkout is one trace: the API request, the payment webhook, the order.confirmed event and the mail job.
The sampler is the SDK's, from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (parentbased_traceidratio with 0.1
samples a tenth of new traces; a continued trace keeps its first decision).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult
    from opentelemetry.trace import Link, SpanKind
    from opentelemetry.trace.span import TraceState
    from opentelemetry.util.types import Attributes

log = logging.getLogger(__name__)

_enabled = False  # set once per process by init()


def enabled() -> bool:
    return _enabled


def init(app: Flask, service: str = "shop-web") -> bool:
    """Set up the SDK for this process (once) and instrument `app`'s engines; True when traces are exported."""
    global _enabled
    endpoint = app.config.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return False
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    from shop.extensions import db

    if not _enabled:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from opentelemetry.instrumentation.requests import RequestsInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider, sampling
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # OTEL_SERVICE_NAME, when set, names every process alike; otherwise each says what it is.
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service})
        # _NoOrphanCalls is a Sampler by its methods, not by subclassing (this module imports no SDK until here).
        sampler = cast("Sampler", _NoOrphanCalls(sampling._get_from_env_or_default()))
        provider = TracerProvider(resource=resource, sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
        trace.set_tracer_provider(provider)
        RedisInstrumentor().instrument()
        RequestsInstrumentor().instrument()
        HTTPXClientInstrumentor().instrument()
        _enabled = True
    # instrument_app() has no annotations: called through Any.
    cast(Any, FlaskInstrumentor()).instrument_app(app, excluded_urls="/metrics,/healthz,/readyz,/static/.*")
    with app.app_context():
        # The instrumentation declares SQLAlchemy < 2.1; its engine events are those of 2.1 (checked by the tests).
        SQLAlchemyInstrumentor().instrument(
            engines=list(db.engines.values()), enable_commenter=False, skip_dep_check=True
        )
    log.info("traces go to %s", endpoint)
    return True


class _NoOrphanCalls:
    """The configured sampler (OTEL_TRACES_SAMPLER), except that a call to PostgreSQL, Redis or another service made
    outside any request, job or event handler (a worker's heartbeat, a relay's poll, a scrape's queue count) starts
    no trace of its own: thousands of one-span traces a minute that say nothing."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        from opentelemetry import trace
        from opentelemetry.sdk.trace.sampling import Decision, SamplingResult

        if kind == trace.SpanKind.CLIENT and not trace.get_current_span(parent_context).get_span_context().is_valid:
            return SamplingResult(Decision.DROP)
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"NoOrphanCalls({self.inner.get_description()})"


def traceparent() -> str | None:
    """The current span's W3C traceparent, to store with work that continues elsewhere; None when not tracing."""
    if not _enabled:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def resumed(
    parent: str | None, name: str, attributes: dict[str, Any] | None = None, kind: str = "internal"
) -> Iterator[None]:
    """A span `name` continuing the trace of `parent` (a stored traceparent), linked to the span current here (a
    webhook's request, say); a plain child of the current span when `parent` is None. Nothing when not tracing."""
    if not _enabled:
        yield
        return
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    here = trace.get_current_span().get_span_context()
    context = TraceContextTextMapPropagator().extract({"traceparent": parent}) if parent else None
    links = [Link(here)] if parent and here.is_valid else None
    tracer = trace.get_tracer("shop")
    with tracer.start_as_current_span(
        name, context=context, kind=getattr(SpanKind, kind.upper()), attributes=attributes, links=links
    ):
        yield


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None when not tracing or outside a span."""
    if not _enabled:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def flush(timeout_ms: int = 5000) -> None:
    """Export what is buffered (a burst worker or a test about to stop)."""
    if _enabled:
        from opentelemetry import trace

        provider: Any = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            provider.force_flush(timeout_ms)
