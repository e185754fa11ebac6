"""Previews are bounded per caller and overall, and waiting ones hold no thread: a flood of previews
is refused with preview_busy instead of stalling every other request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tenancy.render.runtime import StackCapture
from tenancy.service.core import preview
from tests.service.conftest import AppFactory, Issuer, LiveServer, spec

PREVIEW = "/api/v1/environments/dev/tenants/acme/preview"
FLOOD = 60  # more than the 40 threads every synchronous route shares


@pytest.fixture
def held_render(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Renders block until the returned event is set (set at the end of the test whatever happens)."""
    release = threading.Event()

    def render(project_dir: Any, environment: str, name: str, document: Any) -> StackCapture:
        release.wait(30)
        return StackCapture(stack=f"{environment}.{name}", resources=[], outputs={}, secret_outputs=set())

    monkeypatch.setattr(preview, "render_tenant", render)
    yield release
    release.set()


def _post(server: LiveServer, token: str, timeout: float = 15.0) -> httpx.Response:
    with server.client(token, timeout=timeout) as client:
        return client.post(PREVIEW, json=spec("acme"))


def _second_while_the_first_renders(
    server: LiveServer, first: str, second: str, held_render: threading.Event
) -> httpx.Response:
    """A preview by ``second`` while one by ``first`` renders (held until then); the first succeeds."""
    gate = server.app.state.backends.previews
    with ThreadPoolExecutor(max_workers=1) as pool:
        rendering = pool.submit(_post, server, first)
        # Until the first is admitted (a fixed pause lost this race on a loaded machine).
        deadline = time.monotonic() + 10
        while not sum(gate._in_flight.values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            answer = _post(server, second, timeout=3.0)
        finally:
            held_render.set()
        assert rendering.result().status_code == 200
    return answer


def test_a_second_preview_from_the_same_caller_is_refused_while_the_first_renders(
    make_app: AppFactory, serve: Any, issuer: Issuer, held_render: threading.Event
) -> None:
    app = make_app(workers=0)[0]
    server: LiveServer = serve(app)
    token = issuer.admin_of("acme")
    second = _second_while_the_first_renders(server, token, token, held_render)
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "preview_busy"
    assert int(second.headers["Retry-After"]) >= 1


def test_one_tenants_api_keys_share_one_preview_and_are_bounded_in_number(
    make_app: AppFactory, serve: Any, issuer: Issuer, held_render: threading.Event
) -> None:
    """Found by an outside security review: each API key was a caller of its own, and a tenant-admin
    could make any number of them, so five keys held every preview slot and another tenant's previews
    and change requests answered 429 for as long as they liked. A tenant's keys now share one preview
    in flight, and a tenant has at most ``api_key_max_active`` keys."""
    from tests.service.conftest import create_tenant

    app = make_app(workers=0, api_key_max_active=2)[0]
    create_tenant(app, "acme")
    server: LiveServer = serve(app)
    with server.client(issuer.admin_of("acme")) as person:
        keys = [
            person.post("/api/v1/tenants/acme/api-keys", json={"name": f"k{n}", "role": "tenant-admin"})
            for n in range(3)
        ]
    assert [key.status_code for key in keys] == [201, 201, 409]
    assert keys[2].json()["error"]["code"] == "too_many_api_keys"
    first_key, second_key = (key.json()["key"] for key in keys[:2])
    second = _second_while_the_first_renders(server, first_key, second_key, held_render)
    assert second.status_code == 429 and second.json()["error"]["code"] == "preview_busy"


def test_a_flood_of_previews_is_refused_and_other_requests_stay_fast(
    make_app: AppFactory, serve: Any, issuer: Issuer, held_render: threading.Event
) -> None:
    server: LiveServer = serve(make_app(workers=0, preview_max_in_flight=4)[0])
    tokens = [issuer.admin_of("acme", sub=f"flood-{i}") for i in range(FLOOD)]
    with ThreadPoolExecutor(max_workers=FLOOD) as pool:
        try:
            answers = [pool.submit(_post, server, token) for token in tokens]
            deadline = time.monotonic() + 10
            while sum(a.done() for a in answers) < FLOOD - 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            refused = [a for a in answers if a.done() and a.result().status_code == 429]
            # Answered while the four admitted previews still hold their renders (released only in
            # `finally`), so it did not wait behind them; a request that did would time out here.
            with server.client(issuer.admin_of("initech"), timeout=3.0) as other:
                me = other.get("/api/v1/me")
            rendering_meanwhile = sum(not answer.done() for answer in answers)
        finally:
            held_render.set()
        statuses = sorted(a.result().status_code for a in answers)
    assert me.status_code == 200 and rendering_meanwhile == 4
    assert len(refused) == FLOOD - 4
    assert statuses == [200] * 4 + [429] * (FLOOD - 4)
