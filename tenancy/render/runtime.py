"""Run a stack's program in-process under Pulumi mocks and record every resource it declares.

This is how stacks are tested and rendered without the Pulumi CLI: the program is the real one;
only the engine is replaced. Generated values (passwords, keys, kubeconfigs) come back as fixed
placeholders, and values the program marked secret are remembered so render can mask them.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs, Mocks
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from tenancy.builders.contract import tenant_contract
from tenancy.render import sdk_overhead
from tenancy.spec.platform import (
    CONFIG_NAMESPACE,
    OPTIONAL_SECRET_KEYS,
    SECRET_KEYS,
    PlatformConfig,
    read_platform_config_file,
)
from tenancy.spec.yaml_loading import load_yaml
from tenancy.stacks import parse_stack_name
from tenancy.stacks.tenant import CONTRACT_OUTPUT, KEYCLOAK_PROVISIONER_SECRET_OUTPUT, KEYCLOAK_URL_OUTPUT

SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_VALUE_SIG = "1b47061264138c4ac30d75fd1eb44270"
GENERATED = "generated-by-pulumi"
PLACEHOLDER_CREDENTIAL = "placeholder-credential"
PLACEHOLDER_KUBECONFIG = "apiVersion: v1\nkind: Config\n# written by the running vCluster\n"
# The platform stack outputs tenant stacks read that the platform stack exports as secrets.
SECRET_PLATFORM_OUTPUTS = frozenset({KEYCLOAK_PROVISIONER_SECRET_OUTPUT})

sdk_overhead.install()  # under mocks: no stack walk, URN or debug log request per resource; none is read


@dataclass
class DeclaredResource:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str | None = None
    depends_on: list[str] = field(default_factory=list)
    secret_paths: list[tuple[str, ...]] = field(default_factory=list)
    read: bool = False  # declared with .get(): read from the cluster, not managed
    protect: bool = False  # the resource option: Pulumi refuses to delete or replace it
    retain_on_delete: bool = False  # the resource option: deleting it only forgets it
    ignore_changes: list[str] = field(default_factory=list)  # inputs whose changes Pulumi ignores

    @property
    def kind(self) -> str | None:
        return self.inputs.get("kind") if isinstance(self.inputs.get("kind"), str) else None


@dataclass
class StackCapture:
    stack: str
    resources: list[DeclaredResource]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def of_type(self, type_: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> DeclaredResource:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]

    def kubernetes_objects(self) -> list[DeclaredResource]:
        """Objects the program declares directly (not Helm releases, not reads)."""
        return [
            r
            for r in self.resources
            if r.type.startswith("kubernetes:") and r.kind and not r.read and "helm.sh" not in r.type
        ]


def _unwrap(value: Any, path: tuple[str, ...], secrets: list[tuple[str, ...]]) -> Any:
    """Strip Pulumi's secret wrappers, remembering where they were; integral floats become ints."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_VALUE_SIG:
            secrets.append(path)
            return _unwrap(value.get("value"), path, [])
        return {k: _unwrap(v, (*path, k), secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v, (*path, str(i)), secrets) for i, v in enumerate(value)]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RecordingMocks(Mocks):
    def __init__(self, stack_outputs: Mapping[str, Any], *, engine_secrets: bool = False) -> None:
        self.stack_outputs = dict(stack_outputs)
        self.engine_secrets = engine_secrets
        self.records: dict[tuple[str, str], DeclaredResource] = {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        secrets: list[tuple[str, ...]] = []
        inputs = _unwrap(args.inputs, (), secrets)
        self.records[(args.typ, args.name)] = DeclaredResource(
            type=args.typ, name=args.name, inputs=inputs, secret_paths=secrets, read=bool(args.resource_id)
        )
        state = dict(inputs)
        if args.typ == "pulumi:pulumi:StackReference":
            outputs = with_platform_defaults(self.stack_outputs)
            state = {
                "name": inputs.get("name"),
                "outputs": outputs,
                "secretOutputNames": sorted(SECRET_PLATFORM_OUTPUTS & set(outputs)),
            }
        elif args.typ == "random:index/randomPassword:RandomPassword" and self.engine_secrets:
            # The engine marks a password's result secret (the provider lists it as a secret output).
            state["result"] = {SECRET_SIG: SECRET_VALUE_SIG, "value": f"{GENERATED}-{args.name}"}
        elif args.typ.startswith("random:index/random"):
            state["result"] = f"{GENERATED}-{args.name}"
        elif args.typ == "kubernetes:helm.sh/v3:Release":
            state["status"] = {
                "name": inputs.get("name"),
                "namespace": inputs.get("namespace"),
                "status": "deployed",
            }
        elif args.typ == "kubernetes:core/v1:Secret" and args.resource_id:
            state = {"data": {"config": base64.b64encode(PLACEHOLDER_KUBECONFIG.encode()).decode()}}
        return f"{args.name}-id", state

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        # Keycloak lookups of objects the realm import creates: a stable id derived from the name.
        # (A tuple's failure list must be a list: the mock monitor iterates it.)
        if args.token == "keycloak:index/getGroup:getGroup":
            path = str(args.args.get("groupPath") or f"/{args.args.get('name')}")
            name = path.rsplit("/", 1)[-1]
            return {
                "id": f"group{path.replace('/', '-')}",
                "name": name,
                "path": path,
                "groupPath": path,
                "realmId": args.args.get("realmId"),
                "attributes": {},
            }, []
        if args.token == "keycloak:index/getRole:getRole":
            name = str(args.args.get("name"))
            return {
                "id": f"role-{name}",
                "name": name,
                "realmId": args.args.get("realmId"),
                "attributes": {},
                "compositeRoles": [],
                "description": "",
            }, []
        return {}, None


def with_platform_defaults(stack_outputs: Mapping[str, Any]) -> dict[str, Any]:
    """``stack_outputs`` plus what a platform stack exports beside ``tenantContract``, where missing.

    Callers that supply only the contract (the self-service preview) keep working: the Keycloak URL
    follows from the contract's domain, the provisioning secret is a placeholder.
    """
    outputs = dict(stack_outputs)
    contract = outputs.get(CONTRACT_OUTPUT)
    if isinstance(contract, Mapping) and "domain" in contract:
        outputs.setdefault(KEYCLOAK_URL_OUTPUT, f"https://auth.{contract['domain']}")
        outputs.setdefault(KEYCLOAK_PROVISIONER_SECRET_OUTPUT, PLACEHOLDER_CREDENTIAL)
    return outputs


def config_values(config: PlatformConfig) -> dict[str, str]:
    """A validated platform config as Pulumi config entries (objects JSON-encoded, as the engine does)."""
    document = config.model_dump(mode="json", by_alias=True, exclude={"environment"}, exclude_none=True)
    values = {
        f"{CONFIG_NAMESPACE}:{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in document.items()
    }
    # Credentials are encrypted in the stack files; programs under mocks get a placeholder.
    values.update(
        {
            f"{CONFIG_NAMESPACE}:{key}": PLACEHOLDER_CREDENTIAL
            for key in SECRET_KEYS
            if key not in OPTIONAL_SECRET_KEYS
        }
    )
    return values


def contract_for(config: PlatformConfig) -> dict[str, Any]:
    """What the platform stack of this config exports as ``tenantContract`` (camelCase keys)."""
    from pydantic.alias_generators import to_camel

    values = tenant_contract(
        domain=config.domain,
        storage_class=config.storage_class,
        vault_kv_mount=config.vault.kv_mount,
        vault_auth_path=config.vault.kubernetes_auth_path,
    )
    return {to_camel(k): v for k, v in values.items()}


def platform_outputs_for(config: PlatformConfig) -> dict[str, Any]:
    """Every output a tenant stack reads from the platform stack of this config."""
    return with_platform_defaults({CONTRACT_OUTPUT: contract_for(config)})


async def _resolve(outputs: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    values: dict[str, Any] = {}
    secret: set[str] = set()
    for key, value in outputs.items():
        output = pulumi.Output.from_input(value)
        values[key] = _unwrap(await output.future(), (), [])
        if await output.is_secret():
            secret.add(key)
    return values, secret


def capture_program(
    program: Callable[[], Mapping[str, Any]],
    *,
    stack: str,
    project: str = "platform",
    config: Mapping[str, str] | None = None,
    stack_outputs: Mapping[str, Any] | None = None,
    organization: str = "organization",
    engine_secrets: bool = False,
) -> StackCapture:
    """Run ``program`` (which declares resources and returns its stack outputs) under mocks.

    ``organization`` is what ``pulumi.get_organization()`` returns; the default is the DIY backend's.
    ``engine_secrets``: also mark secret what the engine marks by itself (a RandomPassword's
    result), so a test sees which inputs a real preview would hide. Off by default: render finds
    generated values by their placeholder text and masks just those.

    Each capture gets a runtime of its own: Pulumi keeps its settings, config, root stack resource
    and that resource's stack transformations in context variables, so the capture runs in a copy of
    the caller's context with a new root resource, and everything it sets is dropped with that copy.
    Nothing accumulates across captures (``render --all`` once added a transformation per stack to
    one root resource, making every later resource slower), and a capture leaves the caller's
    runtime as it found it.
    """
    return contextvars.copy_context().run(
        _capture_in_fresh_runtime,
        program,
        stack=stack,
        project=project,
        config=dict(config or {}),
        stack_outputs=stack_outputs or {},
        organization=organization,
        engine_secrets=engine_secrets,
    )


def _ensure_thread_event_loop() -> None:
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


def _capture_in_fresh_runtime(
    program: Callable[[], Mapping[str, Any]],
    *,
    stack: str,
    project: str,
    config: dict[str, str],
    stack_outputs: Mapping[str, Any],
    organization: str,
    engine_secrets: bool,
) -> StackCapture:
    # Only ever called inside a context copy (capture_program): these resets stay in that copy.
    pulumi_settings.ROOT.set(None)  # set_mocks creates a new root Stack only when there is none
    _ensure_thread_event_loop()  # the new Stack's outputs need one (a caller may have unset it)
    mocks = RecordingMocks(stack_outputs, engine_secrets=engine_secrets)
    pulumi.runtime.set_mocks(
        mocks,
        project=project,
        stack=stack,
        preview=False,
        organization=organization,
        monitor=sdk_overhead.mock_monitor(mocks),
    )
    pulumi.runtime.set_all_config(config, [key for key in config if key.split(":", 1)[-1] in SECRET_KEYS])
    options: dict[tuple[str, str], tuple[str | None, list[str]]] = {}
    lifecycle: dict[tuple[str, str], tuple[bool, bool, list[str]]] = {}

    def remember(args: pulumi.ResourceTransformationArgs) -> None:
        depends = args.opts.depends_on if isinstance(args.opts.depends_on, list) else []
        names = [getattr(d, "_name", str(d)) for d in depends]
        options[(args.type_, args.name)] = (getattr(args.opts.parent, "_name", None), names)
        lifecycle[(args.type_, args.name)] = (
            bool(args.opts.protect),
            bool(args.opts.retain_on_delete),
            list(args.opts.ignore_changes or []),
        )
        return None

    pulumi.runtime.register_stack_transformation(remember)
    result: dict[str, Any] = {}

    def run() -> None:
        outputs = program()
        values, secret = _sync_await(_resolve(outputs))
        result.update(values=values, secret=secret)

    _sync_await(run_pulumi_func(run))
    for key, record in mocks.records.items():
        record.parent, record.depends_on = options.get(key, (None, []))
        protect, retain, ignore = lifecycle.get(key, (False, False, []))
        record.protect, record.retain_on_delete, record.ignore_changes = protect, retain, ignore
    resources = sorted(mocks.records.values(), key=lambda r: (r.type, r.name))
    return StackCapture(
        stack=stack, resources=resources, outputs=result["values"], secret_outputs=result["secret"]
    )


def capture_stack(stack: str, *, project_dir: Path) -> StackCapture:
    """Run the real program of ``stack`` (``dev``, ``prod``, ``prod.acme``) from ``project_dir``."""
    from tenancy.stacks import stack_outputs

    name = parse_stack_name(stack)
    platform_config = read_platform_config_file(project_dir / f"Pulumi.{name.environment}.yaml")
    project = load_yaml((project_dir / "Pulumi.yaml").read_text())["name"]
    stack_refs = platform_outputs_for(platform_config)
    return capture_program(
        lambda: stack_outputs(stack, project_dir=project_dir),
        stack=str(name),
        project=project,
        config=config_values(platform_config),
        stack_outputs=stack_refs,
    )
