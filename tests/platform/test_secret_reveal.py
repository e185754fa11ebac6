"""A tenant-admin's "reveal my Qdrant API key / vCluster kubeconfig" runs in the self-service API's pods:
``routes/secrets.py`` asks the Pulumi engine for the stack's outputs with secrets, and the engine refuses
before it reads a stack unless its secrets provider's credentials are in the environment
(``PulumiEngine._check_secrets_provider``). The API Deployment the real dev and prod platform programs
render (their stack files) must therefore carry them, each from the credentials Secret the same program
declares; the connection to Vault it needs is traced in test_object_store_egress.py."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from tenancy.automation.errors import SecretsUnavailable
from tenancy.automation.pulumi_engine import PulumiEngine
from tenancy.automation.settings import AutomationSettings
from tenancy.builders.selfservice import API_NAME, ENV_SECRET, WORKER_NAME
from tenancy.render.runtime import StackCapture, capture_stack
from tests.conftest import PROJECT_DIR

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


@pytest.fixture(scope="module", params=["dev", "prod"])
def platform(request: pytest.FixtureRequest) -> Platform:
    """The real platform program of ``Pulumi.<env>.yaml``, under mocks."""
    return Platform(request.param, capture_stack(request.param, project_dir=PROJECT_DIR))


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
