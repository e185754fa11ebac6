"""Prometheus metrics and the request middleware that feeds them (plus request ids and body limits).

Labels are route templates, never tenant names or ids: bounded cardinality, and nothing a tenant owns
leaks into a shared dashboard.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenancy.service.core.errors import unexpected_answer

log = logging.getLogger("tenancy.service")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tenant_api_requests_total",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tenant_api_request_duration_seconds",
            "Time to answer an HTTP request (to the first byte for streams).",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.auth_failures = Counter(
            "tenant_api_auth_failures_total",
            "Credentials refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "tenant_api_rate_limited_total", "Requests refused by the rate limiter.", registry=self.registry
        )
        self.operations_submitted = Counter(
            "tenant_api_operations_submitted_total",
            "Operations queued, by kind.",
            ["kind"],
            registry=self.registry,
        )
        # Where an accepted write's answer waited, stage by stage (each is a group flush shared with
        # the writes beside it): an operator sees whether write latency is the disk (commit, queue,
        # audit) or the service's own work (the request's duration less these).
        self.write_waits = Histogram(
            "tenant_api_write_wait_seconds",
            "Time an accepted tenant write waited for each durable step: its git commit flushed "
            "(commit), its operation queued (queue), its audit line flushed (audit).",
            ["stage"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.secrets_revealed = Counter(
            "tenant_api_secrets_revealed_total",
            "Secret outputs revealed, by output.",
            ["output"],
            registry=self.registry,
        )

    def write_waited(self, stage: str, seconds: float) -> None:
        self.write_waits.labels(stage).observe(seconds)

    def render(self) -> bytes:
        """Every process's counts when the service runs as several (``tenantctl serve --processes``
        sets ``PROMETHEUS_MULTIPROC_DIR`` for them: prometheus_client's multiprocess mode, each
        process's values in files there), so a scrape answered by any process sees the service's."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class RequestContextMiddleware:
    """Pure ASGI (streams pass through untouched): request id, metrics, no-store. Body limits are
    ``core.request_body``'s, inside this one."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # The labelled series, by their labels: prometheus_client's ``labels()`` takes a lock and
        # checks its arguments on every call; route templates, methods and statuses are few.
        self._latency: dict[tuple[str, str], Any] = {}
        self._requests: dict[tuple[str, str, int], Any] = {}

    def _observe(self, method: str, template: str, status: int, seconds: float) -> None:
        latency = self._latency.get((method, template))
        if latency is None:
            latency = self._latency.setdefault(
                (method, template), self.metrics.latency.labels(method, template)
            )
        latency.observe(seconds)
        requests = self._requests.get((method, template, status))
        if requests is None:
            requests = self._requests.setdefault(
                (method, template, status), self.metrics.requests.labels(method, template, str(status))
            )
        requests.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":  # ASGI servers give header names in lower case
                offered = value.decode("latin-1")
                request_id = offered if _REQUEST_ID.match(offered) else ""
        request_id = request_id or os.urandom(16).hex()  # as uuid4().hex, without building a UUID
        scope.setdefault("state", {})["request_id"] = request_id
        extra = [(b"x-request-id", request_id.encode())]
        if scope.get("path", "").startswith("/api/"):
            extra.append((b"cache-control", b"no-store"))
        started = time.perf_counter()
        status = {"code": 500}
        recorded = {"done": False}

        def observe() -> None:
            if recorded["done"]:
                return
            recorded["done"] = True
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self._observe(scope.get("method", ""), template, status["code"], time.perf_counter() - started)

        async def send_with_context(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                message["headers"] = headers + [header for header in extra if header[0] not in names]
                observe()
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except Exception as error:
            if recorded["done"]:  # the response had started: nothing left to answer with
                raise
            # Answer here rather than in Starlette's outermost handler, so the answer carries the
            # request id (the traceback goes to the log, never to the caller).
            code, body, headers = unexpected_answer(
                error, request_id, str(scope.get("method")), str(scope.get("path"))
            )
            status["code"] = code
            await _send_json(send, code, body, request_id, headers)
        finally:
            observe()


async def _send_json(
    send: Send, status: int, body: dict[str, Any], request_id: str, headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", request_id.encode()),
                *((name.lower().encode(), value.encode()) for name, value in (headers or {}).items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
