"""Adjustments of the Pulumi SDK for programs run under mocks: work whose result the mocks never read.

Written for pulumi==3.272.0 (pinned in pyproject.toml; ``tests/render/test_sdk_overhead.py`` fails
when the SDK changes underneath). Each wrapper does what the SDK does unless the monitor (or engine)
is the mock one set by ``pulumi.runtime.set_mocks``; with a real engine (``pulumi up``, the Automation
API) every call goes to the SDK's own function, unchanged. Nothing a program declares, and nothing a
render writes, changes (issue #11):

- **No stack walk per resource.** For every resource it registers or reads, the SDK's
  ``pulumi.runtime.resource._get_stack_trace`` extracts the whole Python stack and turns each frame
  into a file URI, to tell the engine where the resource was declared. The mock monitor never reads
  either field (``MockMonitor.RegisterResource`` and ``ReadResource`` build ``MockResourceArgs`` from
  the type, name, inputs, provider and id only). Under a ``MockMonitor`` the trace is empty, which is
  what the SDK itself sends when it finds no user frame.
- **No unused URN per resource.** Before every registration and read the SDK computes a URN from the
  name, type and parent URN through three ``Output`` objects, two ``apply`` calls and their tasks
  (``create_urn``), for the response it fakes when there is *no* monitor at all; with the mock
  monitor the value is awaited and dropped. Under a ``MockMonitor``, when every part is already a
  string (as it is there), the same URN is built as a string and returned in one ``Output``.
- **A resource's state serialized in one pass.** The mock monitor serializes what
  ``Mocks.new_resource`` returns with ``rpc.serialize_properties``: a coroutine per value, run by an
  event loop of the monitor's thread (``_sync_await``). For a state of plain values (dicts and lists
  of strings, numbers, booleans and None: what ``RecordingMocks`` returns) that gives the values
  themselves, top-level Nones left out, in a ``Struct``; ``MockMonitorWithPlainState`` puts them there
  directly. Any other state, and any resource with transforms, goes to the SDK's monitor code.
- **Plain values serialized without a coroutine each.** ``rpc.serialize_property`` is a coroutine
  called for every value of every resource's inputs; for a string, number, boolean or None it
  returns the value itself after a dozen checks and ``_types.unwrap_type`` of the value's declared
  type (which only matters for containers). Under a ``MockMonitor`` such a value, when its declared
  type is one ``unwrap_type`` has accepted before, comes back as an already-completed future, which
  the caller's ``await`` reads at once; ``unwrap_type`` itself, a pure function of the type, is
  remembered per type. Everything else is serialized by the SDK.
- **Plain structs read in one pass.** ``rpc.deserialize_properties`` turns each ``Struct`` (a
  resource's inputs in the monitor, its outputs back in the program) into Python values through a
  call per value and checks for secrets, assets, resources and unknowns at every level. Under a
  ``MockMonitor`` a struct holding none of those (no signature key, no unknown marker) is read by one
  walk giving the same values: numbers as floats, keys whose value is null left out of a mapping,
  nulls kept in a list. Any other struct is read by the SDK.
- **Plain output values translated without the type dispatch.** Each value the monitor returns
  goes through ``rpc.translate_output_properties`` with the type the resource declares for it; a
  string, integer, boolean or None comes back as it is unless that type is an enum. Under a
  ``MockMonitor`` such a value of a declared type already seen not to be an enum is returned at once
  (per type, the SDK's own ``unwrap_optional_type`` decides what the type is).
- **No search for unknowns in plain values.** Every ``Output``'s resolved value, and every output
  value serialized, is searched for ``Unknown`` markers (``rpc.contains_unknowns``, a closure, a set
  and a generator per value). A value of plain data (dicts with string keys, lists, strings,
  numbers, booleans, None) holds none; under a ``MockMonitor`` the answer for it is False at once.
- **No debug log request nobody keeps.** The SDK logs a few debug messages per resource; each is a
  ``LogRequest`` handed to the engine, which under mocks (``MockEngine``) passes it to a Python logger
  that drops it unless DEBUG is enabled. Under a ``MockEngine`` whose logger would drop it, the
  request is not built; with DEBUG enabled it is logged as before.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pulumi
from google.protobuf import struct_pb2
from pulumi import _types as sdk_types
from pulumi import log as sdk_log
from pulumi.runtime import resource as sdk_resource
from pulumi.runtime import rpc
from pulumi.runtime import settings as sdk_settings
from pulumi.runtime.mocks import MockEngine, MockMonitor, MockResourceArgs
from pulumi.runtime.proto import resource_pb2, source_pb2
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

SDK_VERSION = "3.272.0"  # the pulumi release these adjustments were read against


def sdk_matches() -> bool:
    """Whether the installed SDK is the one these adjustments were read against.

    Checked at run time, not only by the tests: an SDK upgraded without re-reading this module keeps
    the SDK's own code everywhere (renders are slower, never different).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pulumi") == SDK_VERSION
    except PackageNotFoundError:
        return False


def mock_monitor(mocks: Any) -> MockMonitor:
    """The monitor for ``set_mocks``: plain state in one pass where the SDK matches, else the SDK's own."""
    return MockMonitorWithPlainState(mocks) if _installed else MockMonitor(mocks)


_installed = False

_sdk_get_stack_trace: Callable[[], source_pb2.StackTrace] = sdk_resource._get_stack_trace
_sdk_create_urn: Callable[..., pulumi.Output[str]] = sdk_resource.create_urn
_sdk_debug: Callable[..., None] = sdk_log.debug
_sdk_serialize_property: Callable[..., Awaitable[Any]] = rpc.serialize_property
_sdk_unwrap_type: Callable[[Any], Any] = sdk_types.unwrap_type
_sdk_contains_unknowns: Callable[[Any], bool] = rpc.contains_unknowns
_sdk_translate_output_properties: Callable[..., Any] = rpc.translate_output_properties
_sdk_deserialize_properties: Callable[..., Any] = rpc.deserialize_properties


# The context property behind ``get_monitor()``, read directly: its ``__get__`` reads it twice (it
# returns the property itself for a dict, which is no MockMonitor either), and this is asked per value.
_MONITOR_PROPERTY = type(sdk_settings.SETTINGS).__dict__["monitor"]


def _mocked() -> bool:
    return isinstance(_MONITOR_PROPERTY.fget(), MockMonitor)


def _stack_trace_unless_mocked() -> source_pb2.StackTrace:
    if _mocked():
        return source_pb2.StackTrace()
    return _sdk_get_stack_trace()


def _create_urn_unless_mocked(
    name: Any, type_: Any, parent: Any = None, project: Any = None, stack: Any = None
) -> pulumi.Output[str]:
    plain = (
        isinstance(name, str)
        and isinstance(type_, str)
        and (parent is None or isinstance(parent, str))
        and (project is None or isinstance(project, str))
        and (stack is None or isinstance(stack, str))
    )
    if not plain or not _mocked():
        return _sdk_create_urn(name, type_, parent, project, stack)
    # The SDK's expression, on strings instead of outputs of strings.
    if parent is not None:
        prefix = parent[0 : parent.rfind("::")] + "$"
    else:
        stack = sdk_settings.get_stack() if stack is None else stack
        project = sdk_settings.get_project() if project is None else project
        prefix = "urn:pulumi:" + stack + "::" + project + "::"
    return pulumi.Output.from_input(prefix + type_ + "::" + name)


class _PerType:
    """Answers remembered per type object: by identity, since typing's equality is not the SDK's
    (``Union[None, int] == Optional[int]``, yet ``unwrap_optional_type`` rejects the first). Each
    entry holds its type, so no other object takes its id; types are few, the table is bounded."""

    KEPT = 10_000

    def __init__(self) -> None:
        self._answers: dict[int, tuple[Any, Any]] = {}

    def get(self, typ: Any) -> tuple[bool, Any]:
        entry = self._answers.get(id(typ))
        return (True, entry[1]) if entry is not None and entry[0] is typ else (False, None)

    def put(self, typ: Any, answer: Any) -> None:
        if len(self._answers) >= self.KEPT:
            self._answers.clear()
        self._answers[id(typ)] = (typ, answer)


_UNWRAPPED = _PerType()  # declared type -> _types.unwrap_type's answer


def _unwrap_type_remembered(val: Any) -> Any:
    if not _mocked():
        return _sdk_unwrap_type(val)
    known, unwrapped = _UNWRAPPED.get(val)
    if not known:
        unwrapped = _sdk_unwrap_type(val)  # not remembered if it raises
        _UNWRAPPED.put(val, unwrapped)
    return unwrapped


def _serialize_property_unless_plain(
    value: Any,
    deps: Any,
    property_key: Any,
    resource_obj: Any = None,
    input_transformer: Any = None,
    typ: Any = None,
    keep_output_values: bool = False,
    exclude_resource_refs_from_deps: bool = False,
    return_protobuf_value: bool = False,
) -> Awaitable[Any]:
    if (
        type(value) in _PLAIN_LEAVES
        and not return_protobuf_value
        and (typ is None or _unwraps(typ))
        and _mocked()
    ):
        loop = asyncio._get_running_loop()  # None when called to be awaited later: the SDK's way then
        if loop is not None:
            done = loop.create_future()
            done.set_result(value)
            return done
    return _sdk_serialize_property(
        value,
        deps,
        property_key,
        resource_obj,
        input_transformer,
        typ,
        keep_output_values,
        exclude_resource_refs_from_deps,
        return_protobuf_value,
    )


def _unwraps(typ: Any) -> bool:
    """``_types.unwrap_type`` accepted ``typ`` before: the SDK unwraps a value's type first of all."""
    return _UNWRAPPED.get(typ)[0]


class _Special(Exception):
    """A struct holds a value the SDK reads specially (a signature key, the unknown marker)."""


def _deserialize_properties_unless_special(
    props_struct: struct_pb2.Struct, keep_unknowns: bool | None = None, keep_internal: bool | None = True
) -> Any:
    if keep_internal is not False and _mocked():
        try:
            return _struct_values(props_struct)
        except _Special:
            pass
    return _sdk_deserialize_properties(props_struct, keep_unknowns, keep_internal)


def _struct_values(struct: struct_pb2.Struct) -> dict[str, Any]:
    fields = struct.fields
    if rpc._special_sig_key in fields:
        raise _Special
    values = {}
    for key in fields:  # the SDK's order: Struct.items() iterates its fields
        value = _value(fields[key])
        if value is not None:  # as the SDK: a property that deserializes to None does not exist
            values[key] = value
    return values


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        if value.string_value == rpc.UNKNOWN:
            raise _Special
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _struct_values(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    if kind == "null_value":
        return None
    raise _Special  # a value with no kind: the SDK raises its error


_KEPT_LEAVES = frozenset({str, int, bool, type(None)})  # a float may become an int
_KEEPS_LEAVES = _PerType()  # declared type -> a kept leaf of that type comes back as it is


def _translate_output_properties_unless_plain(
    output: Any,
    output_transformer: Callable[[str], str],
    typ: Any = None,
    transform_using_type_metadata: bool = False,
    path: Any = None,
    return_none_on_dict_type_mismatch: bool = False,
) -> Any:
    if type(output) in _KEPT_LEAVES and (typ is None or _keeps_leaves(typ)) and _mocked():
        return output
    return _sdk_translate_output_properties(
        output,
        output_transformer,
        typ,
        transform_using_type_metadata,
        path,
        return_none_on_dict_type_mismatch,
    )


def _keeps_leaves(typ: Any) -> bool:
    """What ``translate_output_properties`` does to a string, integer, boolean or None of ``typ``:
    nothing, unless ``typ`` (unwrapped from Optional) is an enum, which is made from the value."""
    known, keeps = _KEEPS_LEAVES.get(typ)
    if known:
        return bool(keeps)
    try:
        unwrapped = sdk_types.unwrap_optional_type(typ)
    except Exception:
        return False  # the SDK raises it
    keeps = unwrapped is Any or not (inspect.isclass(unwrapped) and issubclass(unwrapped, enum.Enum))
    _KEEPS_LEAVES.put(typ, keeps)
    return bool(keeps)


def _contains_unknowns_unless_plain(val: Any) -> bool:
    if _plain(val) and _mocked():
        return False  # an Unknown is not plain data
    return _sdk_contains_unknowns(val)


def _debug_unless_dropped(
    msg: str, resource: Any = None, stream_id: int | None = None, ephemeral: bool | None = None
) -> None:
    engine = sdk_settings.get_engine()
    if isinstance(engine, MockEngine) and not engine.logger.isEnabledFor(logging.DEBUG):
        return
    _sdk_debug(msg, resource, stream_id, ephemeral)


_PLAIN_LEAVES = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> bool:
    """Made of exactly these types, which ``rpc.serialize_property`` returns as they are."""
    kind = type(value)
    if kind is dict:
        return all(type(key) is str and _plain(item) for key, item in value.items())
    if kind is list:
        return all(_plain(item) for item in value)
    return kind in _PLAIN_LEAVES


def serialized_state(state: dict[str, Any]) -> struct_pb2.Struct:
    """``rpc.serialize_properties(state, {})``'s result, in one synchronous pass when ``state`` is plain."""
    if type(state) is not dict or not _plain(state):
        return _sync_await(rpc.serialize_properties(state, {}))
    struct = struct_pb2.Struct()
    for key, value in state.items():
        if value is not None:  # as the SDK: a property that serializes to None does not exist
            struct[key] = value
    return struct


class MockMonitorWithPlainState(MockMonitor):
    """The SDK's mock monitor, serializing a registered or read resource's state with ``serialized_state``.

    Each method is ``MockMonitor``'s (pulumi 3.272.0) with that one call in place of
    ``_sync_await(rpc.serialize_properties(state, {}))``; the stack resource and resources with
    transforms go to ``MockMonitor`` itself.
    """

    def RegisterResource(self, request: Any) -> Any:
        if request.type == "pulumi:pulumi:Stack" or request.transforms:
            return super().RegisterResource(request)  # type: ignore[no-untyped-call]
        urn = self.make_urn(request.parent, request.type, request.name)
        _ensure_event_loop()  # type: ignore[no-untyped-call]  # resource references need one here
        inputs = rpc.deserialize_properties(request.object)
        resource_args = MockResourceArgs(
            typ=request.type,
            name=request.name,
            inputs=inputs,
            provider=request.provider,
            resource_id=request.importId,
            custom=request.custom or False,
        )
        id_, state = self.mocks.new_resource(resource_args)
        obj_proto = serialized_state(state)
        self.resources[urn] = MockMonitor.ResourceRegistration(urn, id_, state)  # type: ignore[arg-type]
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_, object=obj_proto)  # type: ignore[arg-type]

    def ReadResource(self, request: Any) -> Any:
        _ensure_event_loop()  # type: ignore[no-untyped-call]
        state = rpc.deserialize_properties(request.properties)
        resource_args = MockResourceArgs(
            typ=request.type,
            name=request.name,
            inputs=state,
            provider=request.provider,
            resource_id=request.id,
        )
        id_, state = self.mocks.new_resource(resource_args)
        props_proto = serialized_state(state)
        urn = self.make_urn(request.parent, request.type, request.name)
        self.resources[urn] = MockMonitor.ResourceRegistration(urn, id_, state)  # type: ignore[arg-type]
        return resource_pb2.ReadResourceResponse(urn=urn, properties=props_proto)


def install() -> None:
    """Make these adjustments from now on, in this process (idempotent), if the SDK is the one read."""
    global _installed
    if not sdk_matches():
        return
    _installed = True
    sdk_resource._get_stack_trace = _stack_trace_unless_mocked
    sdk_resource.create_urn = _create_urn_unless_mocked
    sdk_log.debug = _debug_unless_dropped
    sdk_types.unwrap_type = _unwrap_type_remembered
    rpc.serialize_property = _serialize_property_unless_plain  # type: ignore[assignment]
    rpc.contains_unknowns = _contains_unknowns_unless_plain
    rpc.translate_output_properties = _translate_output_properties_unless_plain
    rpc.deserialize_properties = _deserialize_properties_unless_special
