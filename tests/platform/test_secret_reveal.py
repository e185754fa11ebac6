"""A tenant-admin's "reveal my Qdrant API key / vCluster kubeconfig" runs in the self-service API's pods:
``routes/secrets.py`` asks the Pulumi engine for the stack's outputs with secrets, and the engine refuses
before it reads a stack unless its secrets provider's credentials are in the environment
(``PulumiEngine._check_secrets_provider``). The API Deployment the real dev and prod platform programs
render (their stack files) must therefore carry them, each from the credentials Secret the same program
declares; the connection to Vault it needs is traced in test_object_store_egress.py. It must also read the
state where the workers write it: the same bucket in prod, and in dev (no state bucket) the workers' file
backend through a read-only mount of their volume, on their node (README, "Revealing in dev")."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import pytest
import yaml

from components.platform.selfservice import configured_api_vault_token
from tenancy.automation.contract import StackRef
from tenancy.automation.errors import SecretsUnavailable, StackNotFound
from tenancy.automation.pulumi_engine import PulumiEngine
from tenancy.automation.settings import AutomationSettings
from tenancy.builders.selfservice import API_NAME, ENV_SECRET, WORKER_NAME
from tenancy.policy.model import PolicyObject
from tenancy.policy.pods import manifest_pod_templates, restricted_findings
from tenancy.render.runtime import (
    StackCapture,
    capture_program,
    config_values,
    platform_outputs_for,
)
from tenancy.spec.errors import SpecError
from tenancy.spec.platform import read_platform_config_file
from tenancy.stacks import stack_outputs
from tests.conftest import PROJECT_DIR, captured_stack

# What the engine's check reads; cleared first so the test's own environment cannot satisfy it.
PROVIDER_VARIABLES = (
    "PULUMI_CONFIG_PASSPHRASE",
    "PULUMI_CONFIG_PASSPHRASE_FILE",
    "VAULT_SERVER_URL",
    "VAULT_SERVER_TOKEN",
    "VAULT_TOKEN",
    "TENANCY_SECRETS_PROVIDER",
    "TENANCY_BACKEND_URL",
)


class Platform(NamedTuple):
    environment: str
    capture: StackCapture


_CAPTURES: dict[str, StackCapture] = {}


def _platform(environment: str) -> Platform:
    """The real platform program of ``Pulumi.<env>.yaml``, under mocks (run once per environment)."""
    if environment not in _CAPTURES:
        _CAPTURES[environment] = captured_stack(environment)
    return Platform(environment, _CAPTURES[environment])


@pytest.fixture(scope="module", params=["dev", "prod"])
def platform(request: pytest.FixtureRequest) -> Platform:
    return _platform(request.param)


@pytest.fixture(scope="module")
def dev_platform() -> Platform:
    return _platform("dev")


def _inputs(capture: StackCapture, kind: str, name: str) -> dict[str, Any]:
    [found] = [
        r.inputs
        for r in capture.kubernetes_objects()
        if r.kind == kind and r.inputs["metadata"]["name"] == name
    ]
    return found


def pod_environment(capture: StackCapture, deployment: str) -> dict[str, str]:
    """The container's environment as the process would see it. A Secret reference must name a key of
    the credentials Secret the program declares (else the pod would not start); its value is a stand-in."""
    secret = _inputs(capture, "Secret", ENV_SECRET)
    declared = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    [container] = _inputs(capture, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    environment: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            environment[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == ENV_SECRET, item["name"]
        if ref.get("optional") and ref["key"] not in declared:
            continue
        assert ref["key"] in declared, f"{deployment}: {item['name']} names {ref['key']}, not in {ENV_SECRET}"
        environment[item["name"]] = f"<{ref['key']}>"
    return environment


def engine_in(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> PulumiEngine:
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return PulumiEngine(AutomationSettings())


@pytest.mark.parametrize("deployment", [API_NAME, WORKER_NAME])
def test_each_role_has_what_the_engines_secrets_provider_needs_to_decrypt_outputs(
    platform: Platform, deployment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_in(pod_environment(platform.capture, deployment), monkeypatch)
    expected = "hashivault://tenants-transit" if platform.environment == "prod" else "passphrase"
    assert engine.settings.secrets_provider == expected
    engine._check_secrets_provider()  # raises SecretsUnavailable when a credential is missing


def test_the_api_gets_only_what_decrypting_needs(platform: Platform) -> None:
    api = pod_environment(platform.capture, API_NAME)
    if platform.environment == "prod":
        assert api["VAULT_SERVER_URL"] == "https://vault.example.com"
        assert api["VAULT_SERVER_TOKEN"] == "<vault-token>"
        # platform:vaultToken of the tenant programs, which only the workers run.
        assert "VAULT_TOKEN" not in api and "PULUMI_CONFIG_PASSPHRASE" not in api
    else:
        assert api["PULUMI_CONFIG_PASSPHRASE"] == "<pulumi-passphrase>"
        assert not {"VAULT_SERVER_URL", "VAULT_SERVER_TOKEN", "VAULT_TOKEN"} & set(api)


def test_without_the_credentials_the_engine_refuses_to_reveal(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: drop each credential the API got and the engine refuses, by name."""
    api = pod_environment(platform.capture, API_NAME)
    credentials = [
        name for name in ("PULUMI_CONFIG_PASSPHRASE", "VAULT_SERVER_URL", "VAULT_SERVER_TOKEN") if name in api
    ]
    assert credentials
    for dropped in credentials:
        with monkeypatch.context() as scope:
            engine = engine_in({k: v for k, v in api.items() if k != dropped}, scope)
            with pytest.raises(SecretsUnavailable, match=dropped):
                engine._check_secrets_provider()


# --- where the API finds the tenant stacks' state ------------------------------------------------------
#
# The engine the API runs (TENANCY_BACKEND_URL) must read the state the workers' engine writes. With a
# state bucket both name it; without one (the dev stack file) the state is a file backend on the workers'
# ReadWriteOnce claim, which the API mounts read-only and so must share the workers' node.


class StateLocation(NamedTuple):
    """Where a pod's TENANCY_BACKEND_URL leads: ("url", <url>) for a bucket; ("claim", <name>) plus the
    path inside it for a PersistentVolumeClaim; ("pod-private", <volume>) for anything only that pod sees."""

    kind: str
    source: str
    path: str
    read_only: bool


def _pod(capture: StackCapture, deployment: str) -> dict[str, Any]:
    spec: dict[str, Any] = _inputs(capture, "Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def state_location(capture: StackCapture, deployment: str) -> StateLocation:
    url = pod_environment(capture, deployment)["TENANCY_BACKEND_URL"]
    if not url.startswith("file://"):
        return StateLocation("url", url, "", False)
    path = PurePosixPath(url.removeprefix("file://"))
    pod = _pod(capture, deployment)
    [container] = pod["containers"]
    mounts = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert mounts, f"{deployment}: {path} is on no volume (the read-only root)"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    inside = str(path.relative_to(mount["mountPath"]))
    if "persistentVolumeClaim" not in volume:
        return StateLocation("pod-private", f"{deployment}/{volume['name']}", inside, False)
    claim = volume["persistentVolumeClaim"]
    read_only = bool(mount.get("readOnly")) and bool(claim.get("readOnly"))
    return StateLocation("claim", claim["claimName"], inside, read_only)


def test_the_api_reads_the_tenant_state_where_the_workers_write_it(platform: Platform) -> None:
    """Fails when the API's engine looks elsewhere than the workers' (dev before: its own emptyDir, so
    every reveal answered output_not_available)."""
    api, worker = state_location(platform.capture, API_NAME), state_location(platform.capture, WORKER_NAME)
    assert (api.kind, api.source, api.path) == (worker.kind, worker.source, worker.path)
    if platform.environment == "prod":
        assert api.source.startswith("s3://example-platform-prod-tenant-state?")
        return
    assert api.kind == "claim" and api.path == "pulumi-state"
    # Only the workers write it (they hold its lock while they update a stack); the API only reads.
    assert api.read_only and not worker.read_only
    claim = _inputs(platform.capture, "PersistentVolumeClaim", api.source)["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]  # per node: see the scheduling test below


def _mounts_claim(pod: dict[str, Any], claim: str) -> bool:
    return any(v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in pod["volumes"])


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, selector  # the only form these terms use
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def schedulable_nodes(
    template: dict[str, Any], running: dict[str, list[dict[str, str]]], nodes: list[str]
) -> list[str]:
    """The nodes the scheduler may bind a new pod of ``template`` to, by its required pod affinity on
    kubernetes.io/hostname: a node that runs a pod matching each term, or, when no pod anywhere matches
    a term the new pod matches itself, any node (kube-scheduler's exception for a group's first pod)."""
    labels = template["metadata"]["labels"]
    affinity = template["spec"].get("affinity", {}).get("podAffinity", {})
    allowed = list(nodes)
    for term in affinity.get("requiredDuringSchedulingIgnoredDuringExecution", []):
        assert term["topologyKey"] == "kubernetes.io/hostname" and "namespaces" not in term
        hosts = [
            node for node, pods in running.items() for pod in pods if _matches(term["labelSelector"], pod)
        ]
        if not hosts and _matches(term["labelSelector"], labels):
            continue
        allowed = [node for node in allowed if node in hosts]
    return allowed


def test_every_pod_mounting_the_workers_volume_runs_on_the_node_it_is_attached_to(platform: Platform) -> None:
    """ReadWriteOnce is per node: a pod placed on another node than the one holding the volume waits on
    the attachment for good. In any order (first install, a worker recreated while the API runs, the API
    rolled while the worker runs), each pod mounting the claim can only land beside the others."""
    templates = {
        name: _inputs(platform.capture, "Deployment", name)["spec"]["template"]
        for name in (API_NAME, WORKER_NAME)
    }
    if platform.environment == "prod":  # state in the bucket: no shared volume, pods spread over nodes
        assert not any(_mounts_claim(t["spec"], "selfservice-worker-state") for t in templates.values())
        return
    claim = state_location(platform.capture, WORKER_NAME).source
    assert all(_mounts_claim(t["spec"], claim) for t in templates.values())
    nodes = ["node-a", "node-b", "node-c"]
    for first, second in ((WORKER_NAME, API_NAME), (API_NAME, WORKER_NAME)):
        # The first schedules where the volume can be (any of these nodes here), the second follows.
        assert schedulable_nodes(templates[first], {}, nodes) == nodes
        for node in nodes:
            running = {node: [templates[first]["metadata"]["labels"]]}
            assert schedulable_nodes(templates[second], running, nodes) == [node]
            # A second pod of the same Deployment (the API's surge during a rollout) too.
            running[node].append(templates[second]["metadata"]["labels"])
            assert schedulable_nodes(templates[first], running, nodes) == [node]


def test_the_pods_stay_within_pod_security_restricted(platform: Platform) -> None:
    for name in (API_NAME, WORKER_NAME):
        body = _inputs(platform.capture, "Deployment", name)
        obj = PolicyObject("Deployment", "apps/v1", name, body["metadata"]["namespace"], body)
        [template] = manifest_pod_templates(obj)
        assert list(restricted_findings(template)) == []


def test_the_api_engine_finds_no_stack_before_the_first_update_and_writes_nothing(
    dev_platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's own engine, in its pod's environment, on an empty workers' volume: "not deployed yet"
    (the route's output_not_available), and nothing written there (the mount is read-only)."""
    api = pod_environment(dev_platform.capture, API_NAME)
    mount = PurePosixPath(api["TENANCY_BACKEND_URL"].removeprefix("file://")).parent
    volume = tmp_path / "selfservice-worker-state"  # the claim, as the API's node sees it
    volume.mkdir()
    backend = volume / PurePosixPath(api["TENANCY_BACKEND_URL"].removeprefix("file://")).relative_to(mount)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    script = bin_dir / "pulumi"  # a CLI that only tells its version and records anything else asked
    script.write_text(
        f'#!/bin/sh\nif [ "$1" = version ]; then echo v3.272.0; exit 0; fi\necho "$@" >> {calls}\nexit 1\n'
    )
    script.chmod(0o755)
    environment = {**api, "TENANCY_BACKEND_URL": backend.as_uri(), "TENANCY_PROJECT_DIR": str(PROJECT_DIR)}
    engine = engine_in(environment, monkeypatch)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    with pytest.raises(StackNotFound):
        engine.outputs(StackRef("dev", "acme"), reveal_secrets=True)

    assert list(volume.iterdir()) == [] and not calls.exists()


# --- the API's own Vault token (optional) ---------------------------------------------------------------

API_TOKEN = "operator-issued-api-token"  # stands for what `pulumi config set --secret` stores


def _prod_with_api_token() -> StackCapture:
    """The real prod program with ``platform:selfServiceApiVaultToken`` set, as an operator sets it."""
    config = read_platform_config_file(PROJECT_DIR / "Pulumi.prod.yaml")
    return capture_program(
        lambda: stack_outputs("prod", project_dir=PROJECT_DIR),
        stack="prod",
        config={**config_values(config), "platform:selfServiceApiVaultToken": API_TOKEN},
        stack_outputs=platform_outputs_for(config),
    )


def test_the_api_decrypts_with_its_own_vault_token_when_an_operator_issued_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    capture = _prod_with_api_token()
    api, worker = pod_environment(capture, API_NAME), pod_environment(capture, WORKER_NAME)
    assert api["VAULT_SERVER_TOKEN"] == "<api-vault-token>"
    assert worker["VAULT_SERVER_TOKEN"] == worker["VAULT_TOKEN"] == "<vault-token>"  # the workers keep theirs
    engine_in(api, monkeypatch)._check_secrets_provider()
    secret = next(
        r
        for r in capture.kubernetes_objects()
        if r.kind == "Secret" and r.inputs["metadata"]["name"] == ENV_SECRET
    )
    assert secret.inputs["stringData"]["api-vault-token"] == API_TOKEN


def test_the_api_token_stays_a_secret_output() -> None:
    config = read_platform_config_file(PROJECT_DIR / "Pulumi.prod.yaml")
    capture = capture_program(
        lambda: {"token": configured_api_vault_token(config)},
        stack="prod",
        config={**config_values(config), "platform:selfServiceApiVaultToken": API_TOKEN},
    )
    assert capture.outputs["token"] == API_TOKEN and capture.secret_outputs == {"token"}


def test_without_an_api_token_the_api_uses_the_workers_and_the_secret_holds_no_copy(
    platform: Platform,
) -> None:
    """The shipped stack files set none: the API's token is the workers' (prod), nothing at all in dev."""
    secret = _inputs(platform.capture, "Secret", ENV_SECRET)
    assert "api-vault-token" not in secret["stringData"]
    if platform.environment == "prod":
        assert pod_environment(platform.capture, API_NAME)["VAULT_SERVER_TOKEN"] == "<vault-token>"


def test_the_api_token_is_refused_in_plain_text_in_a_stack_file(tmp_path: Path) -> None:
    document = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text())
    document["config"]["platform:selfServiceApiVaultToken"] = "hvs.in-plain-text"
    stack_file = tmp_path / "Pulumi.prod.yaml"
    stack_file.write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError) as raised:
        read_platform_config_file(stack_file)
    assert "platform:selfServiceApiVaultToken" in str(raised.value) and "--secret" in str(raised.value)


# --- rolling the pods out on a full node -----------------------------------------------------------------


def _millicores(quantity: str) -> int:
    return int(quantity.removesuffix("m")) if quantity.endswith("m") else int(float(quantity) * 1000)


class Pod(NamedTuple):
    deployment: str
    revision: str  # "old" | "new"
    labels: dict[str, str]
    cpu: int
    node: str | None  # None: pending


def roll_out(deployments: dict[str, dict[str, Any]], rolled: str, nodes: dict[str, int]) -> list[Pod] | None:
    """The pods once Deployment ``rolled`` (of ``deployments``, their specs as rendered) has replaced its
    pods, or None when the rollout stops for good. ``nodes``: each node's CPU left for requests before
    any of these pods runs. A model of the Deployment controller (Recreate: the old pods go, then the new
    come; RollingUpdate: new pods up to replicas + maxSurge, old ones removed while at least replicas -
    maxUnavailable stay available) and of kube-scheduler (the pod affinity, schedulable_nodes, and the
    CPU the node has left). Every pod starts as soon as it is bound; a removed pod frees its room."""

    def template_pod(name: str, revision: str) -> Pod:
        template = deployments[name]["template"]
        [container] = template["spec"]["containers"]
        cpu = _millicores(container["resources"]["requests"]["cpu"])
        return Pod(name, revision, template["metadata"]["labels"], cpu, None)

    def schedule(pods: list[Pod]) -> list[Pod]:
        placed: list[Pod] = []
        for index, pod in enumerate(pods):
            if pod.node is None:
                running: dict[str, list[dict[str, str]]] = {}
                for other in [*placed, *pods[index + 1 :]]:
                    if other.node is not None:
                        running.setdefault(other.node, []).append(other.labels)
                room = {
                    node: left - sum(o.cpu for o in [*placed, *pods[index + 1 :]] if o.node == node)
                    for node, left in nodes.items()
                }
                template = deployments[pod.deployment]["template"]
                fits = [
                    node
                    for node in schedulable_nodes(template, running, list(nodes))
                    if room[node] >= pod.cpu
                ]
                pod = pod._replace(node=fits[0]) if fits else pod
            placed.append(pod)
        return placed

    replicas = {name: spec["replicas"] for name, spec in deployments.items()}
    # Every pod running where the scheduler put it (the worker first, as a first install would).
    pods: list[Pod] = []
    for name in sorted(deployments, key=lambda n: n != WORKER_NAME):
        for _ in range(replicas[name]):
            pods = schedule([*pods, template_pod(name, "old")])
    assert all(pod.node is not None for pod in pods), "the starting pods must fit"
    strategy = deployments[rolled]["strategy"]
    wanted = replicas[rolled]
    for _ in range(100):
        mine = [p for p in pods if p.deployment == rolled]
        old = [p for p in mine if p.revision == "old"]
        new = [p for p in mine if p.revision == "new"]
        available = sum(1 for p in mine if p.node is not None)
        if not old and len(new) == wanted and all(p.node is not None for p in new):
            return pods
        before = pods
        if strategy["type"] == "Recreate":
            if old:
                pods = [p for p in pods if p not in old]
            elif len(new) < wanted:
                pods = [*pods, template_pod(rolled, "new")]
        else:
            rolling = strategy["rollingUpdate"]
            surge, unavailable = rolling["maxSurge"], rolling["maxUnavailable"]
            assert isinstance(surge, int) and isinstance(unavailable, int)  # no percentages here
            if len(new) < wanted and len(mine) < wanted + surge:
                pods = [*pods, template_pod(rolled, "new")]
            elif old and available - 1 >= wanted - unavailable:
                # The controller removes an unready pod first, else any old one.
                gone = next((p for p in old if p.node is None), old[0])
                pods = [p for p in pods if p != gone]
        pods = schedule(pods)
        if pods == before:
            return None  # nothing more the controller may do: the rollout waits for good
    raise AssertionError("the rollout model did not settle")


IMAGE = "ghcr.io/example/tenancy-platform@sha256:" + "ab" * 32  # what the deploy workflow records


@pytest.fixture(scope="module")
def deployed_dev() -> StackCapture:
    """The real dev program with ``platform:selfService.image`` set, as the deploy workflow sets it (the
    stack file alone runs no replicas)."""
    config = read_platform_config_file(PROJECT_DIR / "Pulumi.dev.yaml")
    values = config_values(config)
    self_service = json.loads(values["platform:selfService"])
    values["platform:selfService"] = json.dumps({**self_service, "image": IMAGE})
    return capture_program(
        lambda: stack_outputs("dev", project_dir=PROJECT_DIR),
        stack="dev",
        config=values,
        stack_outputs=platform_outputs_for(config),
    )


@pytest.mark.parametrize("rolled", [API_NAME, WORKER_NAME])
def test_each_pod_mounting_the_workers_volume_rolls_out_on_a_full_node(
    deployed_dev: StackCapture, rolled: str
) -> None:
    """The worker's node has no room left for one more pod (other nodes have plenty, but the affinity
    keeps these pods off them): a new image must still roll out, the old pod making room for the new.
    Before, the API's rollout (maxSurge 1, maxUnavailable 0) created a new pod that could schedule
    nowhere and kept the old one, waiting for good."""
    deployments = {
        name: _inputs(deployed_dev, "Deployment", name)["spec"] for name in (API_NAME, WORKER_NAME)
    }
    assert all(spec["replicas"] >= 1 for spec in deployments.values())
    full = sum(
        spec["replicas"]
        * _millicores(spec["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"])
        for spec in deployments.values()
    )
    for room in (0, 1000):  # a full node, and one with room for one more
        pods = roll_out(deployments, rolled, {"node-a": full + room, "node-b": 8000})
        assert pods is not None, f"the rollout of {rolled} waits for good with {room}m left on the node"
        assert {p.node for p in pods} == {"node-a"}  # still together, beside the volume
        mine = [p.revision for p in pods if p.deployment == rolled]
        assert mine == ["new"] * deployments[rolled]["replicas"]
