"""tenantctl's operation commands, run through typer's CliRunner against the engine double."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import tenancy.cli.operations as operations
from tenancy.automation.contract import Engine
from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.settings import AutomationSettings
from tenancy.cli import app, exit_codes

from .conftest import stack

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    engine = FakeEngine()
    monkeypatch.setattr(operations, "make_engine", lambda settings: engine)
    return engine


def tenantctl(project: Path, *args: str) -> Result:
    return runner.invoke(app, [*args, "--project", str(project)])


def payload(result: Result) -> Any:
    return json.loads(result.stdout)


def test_sync_creates_every_tenant_then_finds_nothing_to_do(cli_project: Path, fake: FakeEngine) -> None:
    first = tenantctl(cli_project, "sync", "--env", "dev")
    second = tenantctl(cli_project, "sync", "--env", "dev")

    assert first.exit_code == 0, first.output
    assert "sync dev: 2 create" in first.stdout
    assert "up dev.acme succeeded" in first.stdout and "up dev.initech succeeded" in first.stdout
    assert second.exit_code == 0
    assert "sync dev: 2 unchanged" in second.stdout
    assert len(fake.calls) == 2


def test_sync_updates_only_the_tenant_whose_file_changed(cli_project: Path, fake: FakeEngine) -> None:
    tenantctl(cli_project, "sync", "--env", "dev")
    initech = cli_project / "tenants" / "dev" / "initech.yaml"
    initech.write_text(initech.read_text().replace("displayName: Initech CI", "displayName: Initech QA"))

    result = tenantctl(cli_project, "sync", "--env", "dev", "--json")

    assert result.exit_code == 0, result.output
    document = payload(result)
    assert {row["tenant"]: row["action"] for row in document["plan"]} == {
        "acme": "unchanged",
        "initech": "update",
    }
    assert [op["stack"] for op in document["operations"]] == ["dev.initech"]
    assert fake.calls[-1].spec is not None and fake.calls[-1].spec["displayName"] == "Initech QA"


def test_sync_rejects_an_invalid_tree_before_running_anything(
    cli_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[AutomationSettings] = []

    def factory(settings: AutomationSettings) -> Engine:
        created.append(settings)
        return FakeEngine()

    monkeypatch.setattr(operations, "make_engine", factory)
    (cli_project / "tenants" / "dev" / "broken.yaml").write_text(
        "name: broken\nplan: huge\nowners: [a@b.example]\n"
    )

    result = tenantctl(cli_project, "sync", "--env", "dev")

    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "broken.yaml: plan:" in result.stderr
    assert "nothing was run" in result.stderr
    assert created == []


def test_sync_prune_destroys_removed_unprotected_tenants_and_explains_skips(
    cli_project: Path, fake: FakeEngine
) -> None:
    tenantctl(cli_project, "sync", "--env", "dev")
    tenantctl(cli_project, "sync", "--env", "prod")
    (cli_project / "tenants" / "dev" / "initech.yaml").unlink()  # deletionProtection: false
    (cli_project / "tenants" / "prod" / "acme.yaml").unlink()  # deletion protection on (default)

    without_prune = tenantctl(cli_project, "sync", "--env", "dev")
    dev = tenantctl(cli_project, "sync", "--env", "dev", "--prune")
    prod = tenantctl(cli_project, "sync", "--env", "prod", "--prune")

    assert "skip      dev.initech: tenant file removed; run sync with --prune" in without_prune.stdout
    assert dev.exit_code == 0, dev.output
    assert "destroy   destroy dev.initech succeeded" in dev.stdout
    assert fake.removed == [stack("initech")]
    assert prod.exit_code == 0
    assert "skip      prod.acme: tenant file removed, but deletion protection is on" in prod.stdout
    assert fake.stacks("prod") == [stack("acme", "prod"), stack("globex", "prod")]


def test_sync_dry_run_shows_the_plan_and_changes_nothing(cli_project: Path, fake: FakeEngine) -> None:
    result = tenantctl(cli_project, "sync", "--env", "prod", "--dry-run")

    assert result.exit_code == 0
    assert "sync prod (dry run): 2 create" in result.stdout
    assert "create    prod.acme: new tenant: no stack yet" in result.stdout
    assert fake.calls == []


def test_sync_exits_3_when_an_update_fails_and_names_the_reason(cli_project: Path, fake: FakeEngine) -> None:
    fake.fail_next(stack("acme"), "the Qdrant release did not become ready")

    result = tenantctl(cli_project, "sync", "--env", "dev")

    assert result.exit_code == exit_codes.OPERATION_FAILED
    assert "up dev.acme failed" in result.stdout and "did not become ready" in result.stdout
    assert "1 succeeded, 1 failed" in result.stdout


def test_progress_is_plain_lines_on_stderr_when_not_a_terminal(cli_project: Path, fake: FakeEngine) -> None:
    result = tenantctl(cli_project, "up", "acme", "--env", "dev")

    assert result.exit_code == 0, result.output
    assert "[dev.acme] up started" in result.stderr
    assert "[dev.acme] create kubernetes:core/v1:ConfigMap acme-0: done" in result.stderr
    assert result.stdout.startswith("up dev.acme succeeded")


def test_up_prints_outputs_with_secrets_masked(cli_project: Path, fake: FakeEngine) -> None:
    result = tenantctl(cli_project, "up", "acme", "--env", "dev", "--json")

    assert result.exit_code == 0, result.output
    document = payload(result)
    assert document["operation"]["status"] == "succeeded"
    assert document["operation"]["summary"]["changes"] == {"create": 3}
    assert document["operation"]["summary"]["outputs"]["qdrantApiKey"] == "[secret]"
    assert {row["op"] for row in document["resources"]} == {"create"}


def test_up_rejects_an_invalid_tenant_file_naming_file_field_and_reason(
    cli_project: Path, fake: FakeEngine
) -> None:
    (cli_project / "tenants" / "dev" / "bad.yaml").write_text(
        "name: bad\nowners: [a@bad.example]\nplan: small\nqdrant: {enabled: true, replicas: 7}\n"
    )

    result = tenantctl(cli_project, "up", "bad", "--env", "dev")

    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "bad.yaml: qdrant.replicas:" in result.stderr
    assert fake.calls == []


def test_up_of_an_unknown_tenant_lists_the_tenants_there(cli_project: Path, fake: FakeEngine) -> None:
    result = tenantctl(cli_project, "up", "nobody", "--env", "dev", "--json")

    assert result.exit_code == exit_codes.INVALID_INPUT
    assert payload(result)["error"]["code"] == "invalid_input"
    assert "tenants in dev: acme, initech" in payload(result)["error"]["message"]


def test_an_unknown_environment_is_invalid_input(cli_project: Path, fake: FakeEngine) -> None:
    result = tenantctl(cli_project, "sync", "--env", "staging")

    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "unknown environment 'staging': use one of dev, prod" in result.stderr


def test_outputs_masks_secrets_unless_asked(cli_project: Path, fake: FakeEngine) -> None:
    tenantctl(cli_project, "up", "acme", "--env", "dev")

    masked = tenantctl(cli_project, "outputs", "acme", "--env", "dev")
    shown = tenantctl(cli_project, "outputs", "acme", "--env", "dev", "--show-secrets", "--json")
    one = tenantctl(cli_project, "outputs", "acme", "--env", "dev", "--show-secrets", "--key", "qdrantApiKey")

    assert "qdrantApiKey: [secret]" in masked.stdout
    assert "pass --show-secrets" in masked.stderr
    assert payload(shown)["outputs"]["qdrantApiKey"] == "key-for-acme"
    assert one.stdout == "key-for-acme\n"


def test_outputs_of_a_stack_that_does_not_exist_is_invalid_input(cli_project: Path, fake: FakeEngine) -> None:
    result = tenantctl(cli_project, "outputs", "acme", "--env", "prod")

    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "does not exist" in result.stderr


def test_stacks_lists_every_stack_with_its_last_operation(cli_project: Path, fake: FakeEngine) -> None:
    tenantctl(cli_project, "sync", "--env", "dev")
    fake.fail_next(stack("acme"), "quota exceeded")
    tenantctl(cli_project, "refresh", "acme", "--env", "dev")

    table = tenantctl(cli_project, "stacks")
    document = payload(tenantctl(cli_project, "stacks", "--json"))

    assert table.exit_code == 0
    assert "dev.acme" in table.stdout and "quota exceeded" in table.stdout
    rows = {row["stack"]: row for row in document["stacks"]}
    assert rows["dev.acme"]["lastOperation"]["kind"] == "refresh"
    assert rows["dev.acme"]["lastOperation"]["status"] == "failed"
    assert rows["dev.initech"]["lastOperation"]["status"] == "succeeded"
    assert rows["dev.initech"]["inBackend"] is True


def test_destroy_refuses_a_tenant_with_deletion_protection(cli_project: Path, fake: FakeEngine) -> None:
    tenantctl(cli_project, "up", "acme", "--env", "prod")

    result = tenantctl(cli_project, "destroy", "acme", "--env", "prod", "--yes")

    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "deletion protection on" in result.stderr and "deletionProtection: false" in result.stderr
    assert fake.stacks("prod") == [stack("acme", "prod")]


def test_destroy_without_a_terminal_needs_yes(cli_project: Path, fake: FakeEngine) -> None:
    tenantctl(cli_project, "up", "initech", "--env", "dev")

    refused = tenantctl(cli_project, "destroy", "initech", "--env", "dev")
    confirmed = tenantctl(cli_project, "destroy", "initech", "--env", "dev", "--yes")

    assert refused.exit_code == exit_codes.INVALID_INPUT and "--yes" in refused.stderr
    assert confirmed.exit_code == 0, confirmed.output
    assert fake.removed == [stack("initech")]


def _path_with(tmp_path: Path, pulumi_version: str | None) -> str:
    """A PATH holding only a stand-in `pulumi` (or nothing), and python for the engine's helpers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if pulumi_version is not None:
        script = bin_dir / "pulumi"
        script.write_text(f"#!/bin/sh\necho v{pulumi_version}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(bin_dir)


def test_a_missing_pulumi_cli_exits_4_naming_the_version_and_how_to_install(
    cli_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _path_with(tmp_path, None))

    result = tenantctl(cli_project, "up", "acme", "--env", "dev")

    assert result.exit_code == exit_codes.PULUMI_CLI_MISSING
    assert "the Pulumi CLI was not found on PATH" in result.stderr
    assert "3.272.0" in result.stderr and "https://get.pulumi.com" in result.stderr


def test_a_too_old_pulumi_cli_exits_4_naming_both_versions(
    cli_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", _path_with(tmp_path, "3.100.0"))

    result = tenantctl(cli_project, "sync", "--env", "dev", "--json")

    assert result.exit_code == exit_codes.PULUMI_CLI_MISSING
    error = payload(result)["error"]
    assert error["code"] == "pulumi_cli_missing"
    assert "version 3.100.0" in error["message"] and "needs 3.272.0 or newer" in error["message"]


def test_stacks_without_the_pulumi_cli_lists_the_history_with_a_warning(
    cli_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    monkeypatch.setattr(operations, "make_engine", lambda settings: engine)
    tenantctl(cli_project, "up", "acme", "--env", "dev")
    monkeypatch.undo()
    monkeypatch.setenv("PATH", _path_with(tmp_path, None))
    for name in list(os.environ):
        if name.startswith("TENANCY_"):
            monkeypatch.delenv(name)

    result = tenantctl(cli_project, "stacks")

    assert result.exit_code == 0
    assert "warning: listing the local operation history only" in result.stderr
    assert "dev.acme" in result.stdout


def test_every_operation_command_explains_itself() -> None:
    for command in ("preview", "up", "refresh", "destroy", "sync", "outputs", "stacks"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "Example" in result.stdout, command


def test_a_lock_left_by_an_update_elsewhere_stops_every_command_until_refresh_recover(
    cli_project: Path, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deploy workflow's sync (its own queue) or someone's `pulumi up` holds dev.acme, or was killed
    # holding it: this queue never ran it, so nothing here may cancel it (and the wait for it is cut
    # from ten minutes to none).
    monkeypatch.setenv("TENANCY_LOCK_WAIT_SECONDS", "0")
    tenantctl(cli_project, "up", "acme", "--env", "dev")
    fake.break_stack(stack("acme"))
    runs = len(fake.calls)

    refused = tenantctl(cli_project, "up", "acme", "--env", "dev", "--json")

    assert refused.exit_code == exit_codes.OPERATION_FAILED, refused.output
    summary = payload(refused)["operation"]["summary"]
    assert summary["code"] == "locked_elsewhere"
    assert "tenantctl refresh acme --env dev --recover" in summary["error"]
    assert fake.recoveries == [] and len(fake.calls) == runs  # nothing cancelled, nothing run

    recovered = tenantctl(cli_project, "refresh", "acme", "--env", "dev", "--recover", "--json")

    assert recovered.exit_code == 0, recovered.output
    assert payload(recovered)["operation"]["summary"]["recovered"] is True
    assert fake.recoveries == [stack("acme")]
    assert tenantctl(cli_project, "up", "acme", "--env", "dev").exit_code == 0
