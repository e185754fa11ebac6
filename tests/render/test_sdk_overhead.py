"""The SDK adjustments render makes under mocks (no stack walk, unused URN or dropped debug log request
per resource) and what they rely on.

These fail when the pinned Pulumi SDK changes underneath: then re-read ``tenancy/render/sdk_overhead.py``
against the new SDK before moving its ``SDK_VERSION``.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import pulumi
import pytest
from pulumi import log as sdk_log
from pulumi.runtime import mocks as sdk_mocks
from pulumi.runtime import resource as sdk_resource
from pulumi.runtime import settings as sdk_settings
from pulumi.runtime.proto import source_pb2
from pulumi.runtime.sync_await import _sync_await

from tenancy.render import sdk_overhead
from tenancy.render.runtime import capture_stack
from tenancy.render.write import render_capture
from tests.conftest import PROJECT_DIR


def test_the_adjustment_was_read_against_the_installed_sdk() -> None:
    assert version("pulumi") == sdk_overhead.SDK_VERSION, (
        "the Pulumi SDK changed: check tenancy/render/sdk_overhead.py against it, then move SDK_VERSION"
    )


def test_the_sdk_still_asks_for_a_stack_trace_per_resource_through_the_wrapped_function() -> None:
    for declare in (sdk_resource.register_resource, sdk_resource.read_resource):
        assert "_get_stack_trace()" in inspect.getsource(declare)
    assert sdk_resource._get_stack_trace is sdk_overhead._stack_trace_unless_mocked


def test_the_mock_monitor_reads_no_source_position_or_stack_trace() -> None:
    for method in (sdk_mocks.MockMonitor.RegisterResource, sdk_mocks.MockMonitor.ReadResource):
        source = inspect.getsource(method)
        assert "sourcePosition" not in source and "stackTrace" not in source


def test_with_a_real_engine_the_sdk_walks_the_stack_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    walked = source_pb2.StackTrace(frames=[source_pb2.StackFrame()])
    monkeypatch.setattr(sdk_overhead, "_sdk_get_stack_trace", lambda: walked)

    def trace_with(monitor: object) -> source_pb2.StackTrace:
        sdk_settings.SETTINGS.monitor = monitor  # a context variable: set in a copy only
        return sdk_resource._get_stack_trace()

    assert contextvars.copy_context().run(trace_with, object()) is walked
    assert contextvars.copy_context().run(trace_with, None) is walked
    assert contextvars.copy_context().run(trace_with, sdk_mocks.MockMonitor(_NoMocks())).frames == []


def test_the_sdk_still_computes_a_urn_per_resource_only_for_when_there_is_no_monitor() -> None:
    for declare in (sdk_resource.register_resource, sdk_resource.read_resource):
        source = inspect.getsource(declare)
        assert "mock_urn = await create_urn(name, ty, resolver.parent_urn).future()" in source
        # Assigned once, read once: in the response faked when there is no monitor.
        assert source.count("mock_urn") == 2
        assert source.index("if monitor is None:") < source.rindex("mock_urn") < source.index("monitor.")
    assert sdk_resource.create_urn is sdk_overhead._create_urn_unless_mocked


def test_under_mocks_the_urn_is_the_one_the_sdk_computes() -> None:
    cases: list[tuple[Any, ...]] = [
        ("db", "kubernetes:core/v1:Secret"),
        ("db", "kubernetes:core/v1:Secret", "urn:pulumi:dev.acme::platform::tenancy:x:Tenant::acme"),
        ("db", "random:index/randomPassword:RandomPassword", "", "other", "prod"),
        ("db", "vault:kv/secretV2:SecretV2", None, "other", "prod"),
    ]

    def both(args: tuple[Any, ...]) -> tuple[str | None, str | None]:
        _mock_runtime()
        ours = sdk_resource.create_urn(*args)
        return _sync_await(ours.future()), _sync_await(sdk_overhead._sdk_create_urn(*args).future())

    for args in cases:
        ours, sdk = contextvars.copy_context().run(both, args)
        assert ours == sdk, args


def test_with_a_real_engine_or_outputs_the_sdk_computes_the_urn(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(sdk_overhead, "_sdk_create_urn", lambda *args: calls.append(args))

    def create(monitor: object, parent: pulumi.Output[str] | None) -> None:
        sdk_settings.SETTINGS.monitor = monitor  # a context variable: set in a copy only
        sdk_resource.create_urn("db", "t:m:T", parent)

    contextvars.copy_context().run(create, object(), None)
    contextvars.copy_context().run(create, sdk_mocks.MockMonitor(_NoMocks()), pulumi.Output.from_input("u"))
    assert len(calls) == 2


def test_the_mock_engine_hands_debug_messages_to_its_logger_and_nothing_else() -> None:
    assert "self.logger.debug(request.message)" in inspect.getsource(sdk_mocks.MockEngine.Log)
    assert "engine.Log(req)" in inspect.getsource(sdk_log._log)
    assert "_log(engine, engine_pb2.DEBUG, msg, resource, stream_id, ephemeral)" in inspect.getsource(
        sdk_overhead._sdk_debug
    )
    assert sdk_log.debug is sdk_overhead._debug_unless_dropped


def test_debug_messages_reach_a_logger_that_keeps_them(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[str] = []
    original = sdk_overhead._sdk_debug

    def log_under(engine: object, message: str, send: Callable[..., None]) -> None:
        sdk_settings.SETTINGS.engine = engine  # a context variable: set in a copy only
        sdk_overhead._sdk_debug = send
        try:
            sdk_log.debug(message)
        finally:
            sdk_overhead._sdk_debug = original

    quiet, kept = logging.getLogger("tests.quiet"), logging.getLogger("tests.kept")
    quiet.setLevel(logging.INFO)
    kept.setLevel(logging.DEBUG)
    contextvars.copy_context().run(
        log_under, sdk_mocks.MockEngine(quiet), "dropped", lambda *a: sent.append(a[0])
    )
    contextvars.copy_context().run(log_under, object(), "to the engine", lambda *a: sent.append(a[0]))
    assert sent == ["to the engine"]
    with caplog.at_level(logging.DEBUG, logger="tests.kept"):
        contextvars.copy_context().run(log_under, sdk_mocks.MockEngine(kept), "kept", original)
    assert [r.getMessage() for r in caplog.records if r.name == "tests.kept"] == ["kept"]


def test_a_render_is_the_same_with_and_without_the_stack_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    adjusted = render_capture(capture_stack("dev.initech", project_dir=PROJECT_DIR)).files
    walks = []

    def sdk_walk() -> object:
        walks.append(1)
        return sdk_overhead._sdk_get_stack_trace()

    monkeypatch.setattr(sdk_resource, "_get_stack_trace", sdk_walk)
    with_walk = render_capture(capture_stack("dev.initech", project_dir=PROJECT_DIR)).files

    assert walks  # the SDK's own walk did run in the second render
    assert with_walk == adjusted


def test_a_render_is_the_same_with_the_sdk_s_urn_and_debug_log(monkeypatch: pytest.MonkeyPatch) -> None:
    adjusted = render_capture(capture_stack("dev.acme", project_dir=PROJECT_DIR)).files
    urns: list[object] = []

    def sdk_create_urn(*args: Any) -> pulumi.Output[str]:
        urns.append(args)
        return sdk_overhead._sdk_create_urn(*args)

    monkeypatch.setattr(sdk_resource, "create_urn", sdk_create_urn)
    monkeypatch.setattr(sdk_log, "debug", sdk_overhead._sdk_debug)
    with_sdk = render_capture(capture_stack("dev.acme", project_dir=PROJECT_DIR)).files

    assert urns  # the SDK's own URNs were computed in the second render
    assert with_sdk == adjusted


def _mock_runtime() -> None:
    """Mocks in the current context (call it in a copy): what the URN comparisons run under."""
    sdk_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(_NoMocks(), project="platform", stack="dev.acme", preview=False)


class _NoMocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, object]]:
        return "", {}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, object], None]:
        return {}, None
