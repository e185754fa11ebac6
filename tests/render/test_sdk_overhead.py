"""The one SDK adjustment render makes (no stack walk per resource under mocks) and what it relies on.

These fail when the pinned Pulumi SDK changes underneath: then re-read ``tenancy/render/sdk_overhead.py``
against the new SDK before moving its ``SDK_VERSION``.
"""

from __future__ import annotations

import contextvars
import inspect
from importlib.metadata import version

import pulumi
import pytest
from pulumi.runtime import mocks as sdk_mocks
from pulumi.runtime import resource as sdk_resource
from pulumi.runtime import settings as sdk_settings
from pulumi.runtime.proto import source_pb2

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


class _NoMocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, object]]:
        return "", {}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, object], None]:
        return {}, None
