"""Stack config through the automation: every example tenant, in dev and prod, runs the REAL Pulumi
program (under mocks) with exactly the config the Pulumi engine sets, through `tenantctl sync`.

A key the program requires that the engine does not set, or sets under another name, fails here:
the issue this guards against is every prod tenant stopping with "Missing required configuration
variable platform:vaultToken" while every layer's own tests passed.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

import tenancy.automation.stack_config as stack_config
import tenancy.cli.operations as operations
from tenancy.automation.contract import EngineRequest, OperationKind, StackRef
from tenancy.automation.errors import StackConfigMissing
from tenancy.automation.fake_engine import FakeEngine, TenantProgram
from tenancy.automation.pulumi_engine import PulumiEngine
from tenancy.automation.settings import AutomationSettings
from tenancy.automation.stack_config import (
    SPEC_HASH_KEY,
    TENANTS_DIR_KEY,
    VAULT_TOKEN_KEY,
    tenant_stack_config,
)
from tenancy.cli import app
from tenancy.spec.tree import load_tenants

from .conftest import PROJECT_DIR

TOKEN = "s.vault-token-for-tests-5be1"
runner = CliRunner()


def program_engine(
    monkeypatch: pytest.MonkeyPatch, project: Path, scratch: Path, environ: dict[str, str]
) -> FakeEngine:
    program = TenantProgram(project, scratch_dir=scratch, environ=environ)
    engine = FakeEngine(resources=0, program=program)
    monkeypatch.setattr(operations, "make_engine", lambda settings: engine)
    return engine


def tenantctl(project: Path, *args: str) -> Result:
    return runner.invoke(app, [*args, "--project", str(project), "--json"])


def example_tenants(environment: str) -> list[str]:
    return sorted(f.spec.name for f in load_tenants(PROJECT_DIR / "tenants").environment(environment))


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_sync_runs_every_example_tenant_through_the_real_program(
    environment: str, cli_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = program_engine(monkeypatch, cli_project, tmp_path / "scratch", {"VAULT_TOKEN": TOKEN})
    tenants = example_tenants(environment)
    assert tenants

    result = tenantctl(cli_project, "sync", "--env", environment)

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {op["tenant"]: op["status"] for op in document["operations"]} == dict.fromkeys(
        tenants, "succeeded"
    )
    assert TOKEN not in result.output
    runs = {run.stack.tenant: run for run in engine.program.runs} if engine.program else {}
    assert sorted(runs) == tenants
    for name, run in runs.items():
        # The program read the operation's own copy of the spec, and the hash was recorded.
        assert run.config.plain[TENANTS_DIR_KEY].startswith(str(tmp_path / "scratch"))
        assert run.config.plain[SPEC_HASH_KEY]
        assert run.config.secret == ({VAULT_TOKEN_KEY: TOKEN} if environment == "prod" else {})
        assert any(resource.startswith("kubernetes:core/v1:Namespace ") for resource in run.resources)
        if environment == "prod":
            assert any(resource.startswith("vault:") for resource in run.resources)
        outputs = json.loads(tenantctl(cli_project, "outputs", name, "--env", environment).stdout)["outputs"]
        assert outputs["namespace"] == f"tenant-{name}"
        assert all(
            value == "[secret]" for key, value in outputs.items() if key.endswith(("ApiKey", "Kubeconfig"))
        )


def test_prod_without_vault_token_fails_naming_it_before_the_program_runs(
    cli_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = program_engine(monkeypatch, cli_project, tmp_path / "scratch", {})

    result = tenantctl(cli_project, "sync", "--env", "prod")

    assert result.exit_code == 3, result.output
    operations_run = json.loads(result.stdout)["operations"]
    assert {op["summary"]["code"] for op in operations_run} == {"config_missing"}
    for op in operations_run:
        assert "platform:vaultToken" in op["summary"]["error"] and "set VAULT_TOKEN" in op["summary"]["error"]
    assert engine.program is not None and engine.program.runs == []
    # dev has no Vault: nothing is needed there.
    assert tenantctl(cli_project, "sync", "--env", "dev").exit_code == 0


def test_the_token_may_come_from_a_file(
    cli_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "vault-token"
    token_file.write_text(TOKEN + "\n")
    engine = program_engine(
        monkeypatch, cli_project, tmp_path / "scratch", {"VAULT_TOKEN_FILE": str(token_file)}
    )

    result = tenantctl(cli_project, "up", "acme", "--env", "prod")

    assert result.exit_code == 0, result.output
    assert engine.program is not None and engine.program.runs[-1].config.secret == {VAULT_TOKEN_KEY: TOKEN}


@pytest.mark.parametrize(
    "needed", [(), ("platform:vaultTokn",)], ids=["the engine forgets the key", "the engine misspells it"]
)
def test_a_missing_or_misspelt_key_fails_the_real_program(
    needed: tuple[str, ...], cli_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack_config, "secret_keys_needed", lambda platform: needed)
    monkeypatch.setitem(stack_config.SECRET_SOURCES, "platform:vaultTokn", "VAULT_TOKEN")
    program_engine(monkeypatch, cli_project, tmp_path / "scratch", {"VAULT_TOKEN": TOKEN})

    result = tenantctl(cli_project, "up", "acme", "--env", "prod")

    assert result.exit_code == 3, result.output
    operation = json.loads(result.stdout)["operation"]
    assert operation["summary"]["code"] == "program_error"
    assert "Missing required configuration variable 'platform:vaultToken'" in operation["summary"]["error"]
    assert TOKEN not in result.output


def test_secret_config_in_plain_stack_config_is_refused() -> None:
    with pytest.raises(
        StackConfigMissing, match=r"TENANCY_STACK_CONFIG sets platform:vaultToken in plain text"
    ):
        tenant_stack_config(
            StackRef("dev", "acme"),
            OperationKind.up,
            project_dir=PROJECT_DIR,
            extra={VAULT_TOKEN_KEY: "plain"},
            environ={},
            tenants_dir=PROJECT_DIR / "tenants",
        )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("platform:keycloakUrl", "not a url"),
        ("platform:keycloakUrl", "ftp://keycloak.iam"),
        ("platform:manageKeycloakGroups", "nope"),
        ("platform:platformStack", "org//dev"),
    ],
)
def test_an_invalid_operator_setting_fails_naming_it_before_the_program_runs(
    key: str, value: str, cli_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the workers' TENANCY_STACK_CONFIG sets on every tenant stack: a bad value fails the operation
    # with config_missing, naming the key, instead of reaching a provider that fails without naming it.
    program = TenantProgram(
        cli_project, scratch_dir=tmp_path / "scratch", stack_config={key: value}, environ={}
    )
    engine = FakeEngine(resources=0, program=program)
    monkeypatch.setattr(operations, "make_engine", lambda settings: engine)

    result = tenantctl(cli_project, "up", "acme", "--env", "dev")

    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)["operation"]["summary"]
    assert summary["code"] == "config_missing"
    assert f"TENANCY_STACK_CONFIG: {key} is {value!r}" in summary["error"]
    assert program.runs == []


def test_valid_operator_settings_pass() -> None:
    config = tenant_stack_config(
        StackRef("dev", "acme"),
        OperationKind.up,
        project_dir=PROJECT_DIR,
        extra={
            "platform:keycloakUrl": "http://keycloak-http.iam.svc.cluster.local",
            "platform:manageKeycloakGroups": "false",
            "platform:platformStack": "organization/tenancy-platform/dev",
            "kubernetes:context": "dev",
        },
        environ={},
        tenants_dir=PROJECT_DIR / "tenants",
    )
    assert config.plain["platform:keycloakUrl"] == "http://keycloak-http.iam.svc.cluster.local"


class RecordingStack:
    """What PulumiEngine does to a stack, without the Pulumi CLI."""

    name = "prod.acme"

    def __init__(self) -> None:
        self.config: dict[str, tuple[str, bool]] = {}
        self.removed: list[str] = []

    def set_all_config(self, values: dict[str, Any]) -> None:
        self.config.update({key: (value.value, value.secret) for key, value in values.items()})

    def up(self, **_: Any) -> Any:
        return SimpleNamespace(summary=SimpleNamespace(resource_changes={"create": 1}), outputs={})

    def remove_all_config(self, keys: list[str]) -> None:
        self.removed += keys


def pulumi_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[PulumiEngine, list[RecordingStack]]:
    settings = AutomationSettings(
        project_dir=PROJECT_DIR,
        state_dir=tmp_path / "state",
        stack_config={"kubernetes:context": "prod"},
    )
    engine = PulumiEngine(settings)
    selected: list[RecordingStack] = []

    def select(workspace: Any, ref: StackRef, *, create: bool) -> tuple[RecordingStack, bool]:
        selected.append(RecordingStack())
        return selected[-1], False

    monkeypatch.setattr(engine, "_workspace", lambda **_: object())
    monkeypatch.setattr(engine, "_select", select)
    return engine, selected


def test_the_pulumi_engine_sets_the_same_config_with_credentials_as_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    engine, selected = pulumi_engine(tmp_path, monkeypatch)
    spec = yaml.safe_load((PROJECT_DIR / "tenants" / "prod" / "acme.yaml").read_text())
    request = EngineRequest("op-1", StackRef("prod", "acme"), OperationKind.up, spec)

    engine.run(request, lambda **_: None)

    program = TenantProgram(
        PROJECT_DIR, scratch_dir=engine.settings.operations_dir, stack_config={"kubernetes:context": "prod"}
    )
    expected = program.config_for(request, engine.settings.operations_dir / "op-1")
    assert selected[0].config == {
        **{key: (value, False) for key, value in expected.plain.items()},
        **{key: (value, True) for key, value in expected.secret.items()},
    }
    assert selected[0].config[VAULT_TOKEN_KEY] == (TOKEN, True)
    assert selected[0].config["kubernetes:context"] == ("prod", False)
    assert set(selected[0].removed) == {TENANTS_DIR_KEY, SPEC_HASH_KEY}  # the token stays, encrypted


def test_the_pulumi_engine_stops_before_any_pulumi_run_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.delenv("VAULT_TOKEN_FILE", raising=False)
    engine, selected = pulumi_engine(tmp_path, monkeypatch)
    spec = yaml.safe_load((PROJECT_DIR / "tenants" / "prod" / "acme.yaml").read_text())

    with pytest.raises(StackConfigMissing, match="set VAULT_TOKEN"):
        engine.run(EngineRequest("op-2", StackRef("prod", "acme"), OperationKind.up, spec), lambda **_: None)

    assert selected == []  # no stack was selected, created or run
    assert not (engine.settings.operations_dir / "op-2").exists()
