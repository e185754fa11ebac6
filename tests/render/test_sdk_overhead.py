"""The SDK adjustments render makes under mocks (no stack walk, unused URN or dropped debug log request
per resource) and what they rely on.

These fail when the pinned Pulumi SDK changes underneath: then re-read ``tenancy/render/sdk_overhead.py``
against the new SDK before moving its ``SDK_VERSION``.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import inspect
import logging
import typing
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import pulumi
import pytest
from google.protobuf import struct_pb2
from google.protobuf.internal import well_known_types
from pulumi import _types as sdk_types
from pulumi import _utils
from pulumi import log as sdk_log
from pulumi.runtime import mocks as sdk_mocks
from pulumi.runtime import resource as sdk_resource
from pulumi.runtime import rpc
from pulumi.runtime import settings as sdk_settings
from pulumi.runtime.proto import resource_pb2, source_pb2
from pulumi.runtime.sync_await import _sync_await

from tenancy.render import sdk_overhead
from tenancy.render.runtime import capture_stack
from tenancy.render.write import render_capture
from tests.conftest import PROJECT_DIR


def test_the_adjustment_was_read_against_the_installed_sdk() -> None:
    assert version("pulumi") == sdk_overhead.SDK_VERSION, (
        "the Pulumi SDK changed: check tenancy/render/sdk_overhead.py against it, then move SDK_VERSION"
    )


def test_another_sdk_release_keeps_the_sdks_own_code_and_renders_the_same_bytes() -> None:
    # In a process of its own, where the installed SDK reports another release: nothing is replaced,
    # the monitor is the SDK's own, and a stack renders exactly what it renders here with the adjustments.
    import json
    import subprocess
    import sys

    script = f"""
import hashlib, importlib.metadata as metadata, json, pathlib
real_version = metadata.version
metadata.version = lambda name: "0.0.0" if name == "pulumi" else real_version(name)
from pulumi.runtime import resource as sdk_resource, rpc
from pulumi.runtime.mocks import MockMonitor
from tenancy.render import sdk_overhead
from tenancy.render.runtime import capture_stack
from tenancy.render.write import render_capture
assert not sdk_overhead.sdk_matches()
assert sdk_resource._get_stack_trace is sdk_overhead._sdk_get_stack_trace
assert rpc.serialize_property is sdk_overhead._sdk_serialize_property
assert type(sdk_overhead.mock_monitor(None)) is MockMonitor
files = render_capture(capture_stack("dev.acme", project_dir=pathlib.Path({str(PROJECT_DIR)!r}))).files
print(json.dumps({{str(k): hashlib.sha256(v if isinstance(v, bytes) else v.encode()).hexdigest()
                  for k, v in files.items()}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        cwd=PROJECT_DIR,
        timeout=300,
        capture_output=True,
        text=True,
    )
    files = render_capture(capture_stack("dev.acme", project_dir=PROJECT_DIR)).files
    here = {
        str(k): hashlib.sha256(v if isinstance(v, bytes) else v.encode()).hexdigest()
        for k, v in files.items()
    }
    assert sdk_overhead.sdk_matches()
    assert here and json.loads(done.stdout.strip().splitlines()[-1]) == here


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


# What MockMonitorWithPlainState copies (the monitor's methods) and relies on (how plain values
# serialize, and set_mocks taking a monitor), as read in pulumi 3.272.0.
_SdkMonitor = sdk_mocks.MockMonitor
rpc_translate = sdk_overhead._sdk_translate_output_properties
rpc_deserialize = sdk_overhead._sdk_deserialize_properties
_READ_AGAINST: dict[Callable[..., Any], str] = {
    _SdkMonitor.RegisterResource: "756b6fbc95aee5833987b9b532b5d10c364e29c37c2f6a52363592ebab2565e5",
    _SdkMonitor.ReadResource: "f78a652013d273ca49b08a50d856b0865a813bb35548f057d1ec818edee927ac",
    rpc.serialize_properties: "d101e72bd9ececa92586e13cddd7d0d28d97b0418b28cab0e7e688d86f7cfeff",
    sdk_overhead._sdk_serialize_property: "7e1361fad73506d2c78408541126e705a07da73e5ef44e348e369394f3e30a7a",
    sdk_mocks.set_mocks: "2426a15812d1a2736faa7016d5065263693191462e881ae945553bd24ad4c583",
    _utils.ContextProperty.fget: "89c829c498b5e8d819e954655cb83efaad2b7a3b7379c9dc16a2cf467a4cee43",
    _utils.ContextProperty.__get__: "9ad2f80adadba86b823dc23a7599102d744dc66a14a961fffadc7f08cb4af8a9",
    sdk_overhead._sdk_contains_unknowns: "1f1f335b6f48b96055607dbb5be2e53b1163e35ec88704c89a41271070017cc8",
    pulumi.output.contains_unknowns: "7a62cfc4a045e138d98eaf1df1ea44a99574cc34031ec686233946b4471a62bf",
    rpc_translate: "3b2d90a79afc9f4f99b6577ecf3a145f6599bcea9cfc35a280d3cc40c9995f42",
    rpc_deserialize: "e4b8ebdc1594cf4eeaa421cda2c89ffc39d5a2590fa19753c78d8ebc13e95c7e",
    rpc.deserialize_property: "662b333c8c26d2708fa7f7745c712def4e8bc98a844c1ab9bac1e266f48a2cb5",
    well_known_types.Struct.items: "444dab65c3192c4e7b21c5a934cfee271fdfd8788a0277812ed1122ca301831f",
    well_known_types.Struct.__iter__: "1dda21faf882b3c5d6ca956e55293bbe934ff05e50498f75b77f3a604d721bd8",
    well_known_types._GetStructValue: "d5f0ef94de49d5cf19c0c19cb27d3ea5d1b1f1953270457db0ba72aafad29128",
    well_known_types.ListValue.__getitem__:  # reading a list
    "fc96e6f93d218cbaba48c17bbf7bb79c6158271b357f33ea95d869becea2e04b",
    sdk_types.unwrap_optional_type: "66ac125c3482ccba5a1dae55e09f1e3ce9b117f75862e89c8030494305285d38",
    sdk_overhead._sdk_unwrap_type: "6ccd35036cb0b3d4c00ef27db03174477870a0e212643876bc7b1718e4ff3c06",
}


def test_the_mock_monitor_code_the_plain_state_monitor_copies_is_unchanged() -> None:
    for function, digest in _READ_AGAINST.items():
        source = inspect.getsource(function)
        assert hashlib.sha256(source.encode()).hexdigest() == digest, (
            f"{function.__qualname__} changed: re-read MockMonitorWithPlainState against it"
        )


_STATES: list[Any] = [
    {},
    {"a": None, "b": {"c": None, "d": [None, 1, 2.5, True, False, "x"]}, "e": []},
    {
        "metadata": {"name": "db", "labels": {"tenant": "acme"}},
        "spec": {"replicas": 3, "ports": [{"port": 80}]},
    },
    {"result": {rpc._special_sig_key: rpc._special_secret_sig, "value": "generated-by-pulumi-db"}},
    {"big": 2**60, "neg": -1, "zero": 0.0, "text": "\u00e9\U0001f600 a\nb", "nested": [[[{}]]]},
    # Not plain: these take the SDK's path.
    {"tuple": (1, 2), "set_free": [("a",)]},
    {"asset": pulumi.StringAsset("text")},
]


def test_a_state_serializes_to_the_struct_the_sdk_makes() -> None:
    def both(state: Any) -> tuple[object, object]:
        _mock_runtime()
        return sdk_overhead.serialized_state(state), _sync_await(rpc.serialize_properties(state, {}))

    for state in _STATES:
        ours, sdk = contextvars.copy_context().run(both, state)
        assert ours == sdk, state


def test_the_plain_state_monitor_answers_as_the_sdk_s() -> None:
    capture = capture_stack("prod.acme", project_dir=PROJECT_DIR)
    assert capture.resources

    def registered(monitor_type: type[sdk_mocks.MockMonitor]) -> tuple[object, ...]:
        from tenancy.render.runtime import RecordingMocks

        sdk_settings.ROOT.set(None)
        mocks = RecordingMocks({})
        monitor = monitor_type(mocks)
        pulumi.runtime.set_mocks(mocks, project="platform", stack="prod.acme", preview=False, monitor=monitor)
        answers = []
        for resource in capture.resources:
            request = resource_pb2.RegisterResourceRequest(
                type=resource.type,
                name=resource.name,
                object=_sync_await(rpc.serialize_properties(resource.inputs, {})),
                custom=True,
            )
            answers.append(monitor.RegisterResource(request))  # type: ignore[no-untyped-call]
        read = resource_pb2.ReadResourceRequest(type="kubernetes:core/v1:Secret", name="kc", id="ns/kc")
        answers.append(monitor.ReadResource(read))  # type: ignore[no-untyped-call]
        return (*answers, monitor.resources)

    ours = contextvars.copy_context().run(registered, sdk_overhead.MockMonitorWithPlainState)
    sdk = contextvars.copy_context().run(registered, sdk_mocks.MockMonitor)
    assert ours == sdk


def test_the_monitor_is_read_as_get_monitor_reads_it() -> None:
    def read(monitor: object) -> tuple[object, bool]:
        sdk_settings.SETTINGS.monitor = monitor  # a context variable: set in a copy only
        return sdk_overhead._MONITOR_PROPERTY.fget(), sdk_overhead._mocked()

    mock = sdk_mocks.MockMonitor(_NoMocks())
    for monitor in (mock, object(), None):
        assert contextvars.copy_context().run(read, monitor) == (monitor, monitor is mock)
    assert sdk_settings.get_monitor.__code__.co_names == ("SETTINGS", "monitor")


def test_under_mocks_unknowns_are_found_as_the_sdk_finds_them() -> None:
    unknown = pulumi.output.UNKNOWN
    values: list[Any] = [
        "a", 1, 2.5, True, None, {}, [], {"a": [1, {"b": None}]},  # plain: none
        unknown, {"a": unknown}, [1, [unknown]], {"a": {"b": [unknown]}},
        (unknown,), {1: unknown}, {1: "a"}, {"a": ("b",)}, [b"bytes"],
    ]  # fmt: skip

    def both(value: Any) -> tuple[bool, bool]:
        _mock_runtime()
        return pulumi.contains_unknowns(value), sdk_overhead._sdk_contains_unknowns(value)

    for value in values:
        ours, sdk = contextvars.copy_context().run(both, value)
        assert ours == sdk, value
    assert rpc.contains_unknowns is sdk_overhead._contains_unknowns_unless_plain


class _Colour(enum.Enum):
    RED = "red"
    ONE = 1


def test_under_mocks_output_values_are_translated_as_the_sdk_translates_them() -> None:
    typs: list[Any] = [None, str, int, float, bool, Any, _Colour, _Colour | None, int | None]
    typs += [typing.Union[None, int], dict[str, int], list[str], typing.List[int]]  # noqa: UP006, UP007
    values: list[Any] = ["red", "", 1, 0, 2.0, 2.5, True, None, {"a": 1}, [1, "b"]]

    def both(value: Any, typ: Any) -> tuple[object, object, object]:
        _mock_runtime()

        def translate(function: Callable[..., Any]) -> object:
            try:
                result = function(value, lambda name: name, typ)
            except Exception as error:
                return (type(error), str(error))
            return (type(result), result)

        first = translate(rpc.translate_output_properties)
        again = translate(rpc.translate_output_properties)  # the type known by now
        return first, again, translate(sdk_overhead._sdk_translate_output_properties)

    for value in values:
        for typ in typs:
            first, again, sdk = contextvars.copy_context().run(both, value, typ)
            assert first == again == sdk, (value, typ)


def _comparable(value: Any) -> Any:
    """``value`` with objects (unknowns, assets) as their type and attributes, to compare by value."""
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_comparable(item) for item in value]
    if hasattr(value, "__dict__"):
        return (type(value).__name__, _comparable(vars(value)))
    return (type(value).__name__, value)


def test_under_mocks_structs_are_read_as_the_sdk_reads_them() -> None:
    secret = {rpc._special_sig_key: rpc._special_secret_sig, "value": "s"}
    documents: list[dict[str, Any]] = [
        {},
        {"a": None, "b": {"c": None, "d": [None, 1, 2.5, True, "x", {}, []]}, "e": ""},
        {"metadata": {"name": "db", "labels": {"tenant": "acme"}}, "spec": {"replicas": 3}},
        {"password": secret, "list": [1, secret], "map": {"k": secret}},
        {"u": rpc.UNKNOWN, "nested": [{"u": rpc.UNKNOWN}]},
        {"asset": {rpc._special_sig_key: rpc._special_asset_sig, "text": "t"}},
        {"__internal": 1, "__provider": "p", "plain": 2},
    ]
    structs = []
    for document in documents:
        struct = struct_pb2.Struct()
        struct.update(document)
        structs.append(struct)
    unset = struct_pb2.Struct()
    unset.fields["empty"].Clear()  # a value of no kind
    structs.append(unset)

    def read(
        struct: struct_pb2.Struct, keep_unknowns: bool | None, keep_internal: bool | None
    ) -> tuple[object, object]:
        def outcome(function: Callable[..., Any]) -> object:
            try:
                return ("ok", _comparable(function(struct, keep_unknowns, keep_internal)))
            except Exception as error:
                return (type(error), str(error))

        _mock_runtime()
        return outcome(rpc.deserialize_properties), outcome(rpc_deserialize)

    for struct in structs:
        for keep_unknowns, keep_internal in ((None, True), (True, True), (False, False), (None, None)):
            answers = contextvars.copy_context().run(read, struct, keep_unknowns, keep_internal)
            assert answers[0] == answers[1], (struct, keep_unknowns, keep_internal)


def test_under_mocks_plain_values_serialize_as_the_sdk_serializes_them() -> None:
    typs: list[Any] = [None, str, pulumi.Input[str] | None, pulumi.Input[int], bool | None, Any]  # type: ignore[misc]
    typs += [int | None, typing.Union[None, int]]  # noqa: UP007  # equal, yet only the first unwraps
    values: list[Any] = ["a", "", 0, 3, 2.5, True, False, None, {"a": [1, "b"]}, [None]]

    def both(value: Any, typ: Any) -> tuple[object, object, object]:
        _mock_runtime()

        async def serialize(function: Callable[..., Any]) -> object:
            try:
                result = await function(value, [], "key", typ=typ)  # awaited at once, as the SDK does
            except Exception as error:
                return (type(error), str(error))
            return (type(result), result)

        first = _sync_await(serialize(rpc.serialize_property))
        again = _sync_await(serialize(rpc.serialize_property))  # the type known by now
        return first, again, _sync_await(serialize(sdk_overhead._sdk_serialize_property))

    for value in values:
        for typ in typs:
            first, again, sdk = contextvars.copy_context().run(both, value, typ)
            assert first == again == sdk, (value, typ)


def test_a_type_the_sdk_cannot_unwrap_fails_every_time_as_in_the_sdk() -> None:
    broken = typing._GenericAlias(pulumi.Output, (int, str))  # type: ignore[attr-defined]  # two arguments

    def serialize() -> object:
        _mock_runtime()
        return _sync_await(rpc.serialize_property("a", [], "key", typ=broken))

    for _ in range(2):
        with pytest.raises(AssertionError):
            contextvars.copy_context().run(serialize)


def test_with_a_real_engine_the_sdk_serializes_every_value(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    async def sdk(value: object, *args: object) -> object:
        calls.append(value)
        return value

    monkeypatch.setattr(sdk_overhead, "_sdk_serialize_property", sdk)

    def serialize(monitor: object) -> object:
        sdk_settings.SETTINGS.monitor = monitor  # a context variable: set in a copy only
        return _sync_await(rpc.serialize_property("a", [], "key"))

    assert contextvars.copy_context().run(serialize, object()) == "a"
    assert calls == ["a"]


def test_a_render_is_the_same_with_the_sdk_s_serialization_and_unknowns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adjusted = render_capture(capture_stack("prod.acme", project_dir=PROJECT_DIR)).files
    monkeypatch.setattr(rpc, "serialize_property", sdk_overhead._sdk_serialize_property)
    monkeypatch.setattr(sdk_types, "unwrap_type", sdk_overhead._sdk_unwrap_type)
    monkeypatch.setattr(rpc, "contains_unknowns", sdk_overhead._sdk_contains_unknowns)
    monkeypatch.setattr(rpc, "translate_output_properties", sdk_overhead._sdk_translate_output_properties)
    monkeypatch.setattr(rpc, "deserialize_properties", rpc_deserialize)
    assert render_capture(capture_stack("prod.acme", project_dir=PROJECT_DIR)).files == adjusted


def _mock_runtime() -> None:
    """Mocks in the current context (call it in a copy): what the URN comparisons run under."""
    sdk_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(_NoMocks(), project="platform", stack="dev.acme", preview=False)


class _NoMocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, object]]:
        return "", {}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, object], None]:
        return {}, None


def _without_any_adjustment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's own path for everything sdk_overhead changes; any adjustment that still runs fails."""
    monkeypatch.setattr(sdk_resource, "_get_stack_trace", sdk_overhead._sdk_get_stack_trace)
    monkeypatch.setattr(sdk_resource, "create_urn", sdk_overhead._sdk_create_urn)
    monkeypatch.setattr(sdk_log, "debug", sdk_overhead._sdk_debug)
    monkeypatch.setattr(sdk_types, "unwrap_type", sdk_overhead._sdk_unwrap_type)
    monkeypatch.setattr(rpc, "serialize_property", sdk_overhead._sdk_serialize_property)
    monkeypatch.setattr(rpc, "contains_unknowns", sdk_overhead._sdk_contains_unknowns)
    monkeypatch.setattr(rpc, "translate_output_properties", sdk_overhead._sdk_translate_output_properties)
    monkeypatch.setattr(rpc, "deserialize_properties", sdk_overhead._sdk_deserialize_properties)
    monkeypatch.setattr(sdk_overhead, "MockMonitorWithPlainState", sdk_mocks.MockMonitor)

    def adjusted(*_: object, **__: object) -> Any:
        raise AssertionError("an adjustment ran with every adjustment undone")

    for name in ("_mocked", "serialized_state", "_plain", "_struct_values"):
        monkeypatch.setattr(sdk_overhead, name, adjusted)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_platform_stacks_render_byte_for_byte_as_with_the_sdk_s_own_path(
    monkeypatch: pytest.MonkeyPatch, stack: str
) -> None:
    """The real platform programs (the largest renders, not covered by the tenant-stack comparisons
    above) with every adjustment at once, against the SDK's own code for all of them: every file."""
    adjusted = render_capture(capture_stack(stack, project_dir=PROJECT_DIR)).files
    _without_any_adjustment(monkeypatch)
    unadjusted = render_capture(capture_stack(stack, project_dir=PROJECT_DIR)).files
    assert sorted(unadjusted) == sorted(adjusted)
    assert [path for path in adjusted if adjusted[path] != unadjusted[path]] == []


def test_with_a_real_engine_every_adjusted_function_is_the_sdk_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a render under mocks, a runtime with a real monitor and engine (``pulumi up``'s, the
    Automation API's) gets the SDK's own answer from every function sdk_overhead replaced."""
    render_capture(capture_stack("dev.acme", project_dir=PROJECT_DIR))  # mocks were set in this process
    struct = struct_pb2.Struct()
    struct["a"] = "b"
    calls: list[str] = []

    def recorded(name: str) -> Callable[..., Any]:
        def sdk(*_: object, **__: object) -> Any:
            calls.append(name)
            return "sdk"

        return sdk

    cases: list[tuple[str, Callable[[], Any]]] = [
        ("_sdk_get_stack_trace", lambda: sdk_resource._get_stack_trace()),
        ("_sdk_create_urn", lambda: sdk_resource.create_urn("n", "t:m:R", None, "p", "s")),
        ("_sdk_debug", lambda: sdk_log.debug("message")),
        ("_sdk_unwrap_type", lambda: sdk_types.unwrap_type(str)),
        ("_sdk_contains_unknowns", lambda: rpc.contains_unknowns({"a": "b"})),
        ("_sdk_translate_output_properties", lambda: rpc.translate_output_properties("v", lambda k: k, str)),
        ("_sdk_deserialize_properties", lambda: rpc.deserialize_properties(struct)),
    ]
    for name, _ in cases:
        monkeypatch.setattr(sdk_overhead, name, recorded(name))

    class RealEngine:  # neither MockMonitor nor MockEngine
        def Log(self, request: object) -> None:
            pass

    def under_a_real_engine() -> list[Any]:
        sdk_settings.SETTINGS.monitor = object()  # context variables: set in a copy only
        sdk_settings.SETTINGS.engine = RealEngine()
        return [call() for _, call in cases]

    answers = contextvars.copy_context().run(under_a_real_engine)
    assert calls == [name for name, _ in cases]
    assert [answer for (name, _), answer in zip(cases, answers, strict=True) if name != "_sdk_debug"] == [
        "sdk"
    ] * (len(cases) - 1)
