"""A test OTLP/HTTP trace receiver on 127.0.0.1: accepts `POST /v1/traces` with a
protobuf `ExportTraceServiceRequest` (decoded with the `opentelemetry-proto`
package, the collector's own message definitions) and keeps every span with its
service name, so a test can check which spans arrived and how they link up."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    links: tuple = field(default=())  # (trace_id, span_id) pairs
    attributes: tuple = field(default=())  # (key, string value) pairs


def _service_of(resource) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return kv.value.string_value
    return ""


def _spans_of(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    out = []
    for rs in request.resource_spans:
        service = _service_of(rs.resource)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(ReceivedSpan(
                    service=service, name=s.name, trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(), parent_span_id=s.parent_span_id.hex(),
                    links=tuple((l.trace_id.hex(), l.span_id.hex()) for l in s.links),
                    attributes=tuple((a.key, str(a.value.string_value or a.value.int_value))
                                     for a in s.attributes)))
    return out


class OtlpReceiver:
    """Collects the spans exported to it until closed."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.bad_requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    if self.path != "/v1/traces":
                        raise ValueError(f"unexpected path {self.path}")
                    if self.headers.get("Content-Type") != "application/x-protobuf":
                        raise ValueError(f"unexpected content type {self.headers.get('Content-Type')}")
                    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                except Exception:  # noqa: BLE001 (any undecodable export is counted)
                    with receiver._lock:
                        receiver.bad_requests += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.requests += 1
                    receiver.spans.extend(_spans_of(request))
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
