"""An OTLP/HTTP trace receiver, as an OpenTelemetry Collector answers the SDK's exporter: POST /v1/traces with a
protobuf ExportTraceServiceRequest, 200 with an empty ExportTraceServiceResponse. The spans are decoded with the
official protobuf classes (opentelemetry-proto) and kept for the test to read.

    with OtlpReceiver() as otlp:          # OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url
        ...
        otlp.spans()                      # [Span(trace_id, span_id, parent_id, name, service, kind, attributes)]
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fakes.serving import ServedInThread


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    kind: int
    attributes: dict = field(default_factory=dict)
    links: list = field(default_factory=list)  # trace ids of the spans it links to


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class OtlpReceiver(ServedInThread):
    def __init__(self):
        receiver = self
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceRequest,
                    ExportTraceServiceResponse,
                )

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(body)
                receiver._keep(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        super().__init__(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.url = f"http://127.0.0.1:{self.port}"

    def _keep(self, request) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = attrs.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    spans.append(
                        Span(
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            name=s.name,
                            service=service,
                            kind=s.kind,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            links=[link.trace_id.hex() for link in s.links],
                        )
                    )
        with self._lock:
            self.requests += 1
            self._spans.extend(spans)

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)
