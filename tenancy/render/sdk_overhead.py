"""One adjustment of the Pulumi SDK for programs run under mocks: no stack walk per resource.

Written for pulumi==3.272.0 (pinned in pyproject.toml; ``tests/render/test_sdk_overhead.py`` fails
when the SDK changes underneath). For every resource it registers or reads, the SDK's
``pulumi.runtime.resource._get_stack_trace`` extracts the whole Python stack and turns each frame into
a file URI, to tell the engine where the resource was declared. The mock monitor never reads either
field (``MockMonitor.RegisterResource`` and ``ReadResource`` build ``MockResourceArgs`` from the type,
name, inputs, provider and id only), yet the walk was about a tenth of a render (issue #11). The SDK
offers no setting for it, so ``install`` wraps that one function: under a ``MockMonitor`` it returns
an empty trace, which is what the SDK itself sends when it finds no user frame; with a real engine it
walks the stack as before. Nothing a program declares, and nothing a render writes, changes.
"""

from __future__ import annotations

from collections.abc import Callable

from pulumi.runtime import resource as sdk_resource
from pulumi.runtime import settings as sdk_settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.proto import source_pb2

SDK_VERSION = "3.272.0"  # the pulumi release this adjustment was read against

_sdk_get_stack_trace: Callable[[], source_pb2.StackTrace] = sdk_resource._get_stack_trace


def _stack_trace_unless_mocked() -> source_pb2.StackTrace:
    if isinstance(sdk_settings.get_monitor(), MockMonitor):
        return source_pb2.StackTrace()
    return _sdk_get_stack_trace()


def install() -> None:
    """Skip the stack walk under mocks from now on, in this process (idempotent)."""
    sdk_resource._get_stack_trace = _stack_trace_unless_mocked
