"""``tenantctl rotate-keys`` (local path) against the engine double: the record lands in the file and the
update runs; a rotation during the grace period and a grace out of bounds are refused, nothing run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

import tenancy.cli.operations as operations
from tenancy.automation.fake_engine import FakeEngine
from tenancy.cli import app, exit_codes

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    engine = FakeEngine()
    monkeypatch.setattr(operations, "make_engine", lambda settings: engine)
    return engine


def rotate(project: Path, *args: str) -> Result:
    return runner.invoke(app, ["rotate-keys", "acme", "--env", "dev", *args, "--project", str(project)])


def test_rotate_keys_records_the_next_generation_and_runs_up(cli_project: Path, fake: FakeEngine) -> None:
    result = rotate(cli_project, "--grace", "2h", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["operation"]["kind"] == "up" and document["operation"]["status"] == "succeeded"
    record = yaml.safe_load((cli_project / "tenants" / "dev" / "acme.yaml").read_text())["qdrant"][
        "keyRotation"
    ]
    assert record["generation"] == 1 and record["requestedBy"]
    assert len(fake.calls) == 1


def test_rotate_keys_during_the_grace_period_is_refused(cli_project: Path, fake: FakeEngine) -> None:
    assert rotate(cli_project, "--json").exit_code == 0
    again = rotate(cli_project, "--json")
    assert again.exit_code == exit_codes.INVALID_INPUT
    assert json.loads(again.stdout)["error"]["code"] == "rotation_in_progress"
    assert len(fake.calls) == 1


def test_rotate_keys_with_grace_out_of_bounds_changes_nothing(cli_project: Path, fake: FakeEngine) -> None:
    path = cli_project / "tenants" / "dev" / "acme.yaml"
    before = path.read_text()
    result = rotate(cli_project, "--grace", "30d", "--json")
    assert result.exit_code == exit_codes.INVALID_INPUT
    assert json.loads(result.stdout)["error"]["code"] == "invalid_grace"
    assert path.read_text() == before and fake.calls == []


def test_end_grace_records_the_revocation_only_once_the_grace_period_is_over(
    cli_project: Path, fake: FakeEngine
) -> None:
    path = cli_project / "tenants" / "dev" / "acme.yaml"
    assert rotate(cli_project, "--json").exit_code == 0
    early = rotate(cli_project, "--end-grace", "--json")
    assert early.exit_code == exit_codes.INVALID_INPUT
    assert json.loads(early.stdout)["error"]["code"] == "grace_not_over"
    document = yaml.safe_load(path.read_text())
    document["qdrant"]["keyRotation"]["graceUntil"] = "2000-01-01T00:00:00Z"
    path.write_text(yaml.safe_dump(document))
    result = rotate(cli_project, "--end-grace", "--json")
    assert result.exit_code == 0, result.output
    record = yaml.safe_load(path.read_text())["qdrant"]["keyRotation"]
    assert record["generation"] == 1 and record["revokedAt"].endswith("Z")
    assert len(fake.calls) == 2  # the rotation's update, then the revoking one


def test_without_the_pulumi_cli_the_file_is_left_as_it_was(
    cli_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found following the README: the file was rewritten (the next generation recorded, pins dropped)
    and only then the missing CLI stopped the update, leaving a rotation nobody applied."""
    from tenancy.automation.errors import PulumiCliMissing

    def missing(settings: object) -> FakeEngine:
        raise PulumiCliMissing("the Pulumi CLI is not installed")

    monkeypatch.setattr(operations, "make_engine", missing)
    path = cli_project / "tenants" / "dev" / "acme.yaml"
    before = path.read_text()
    result = rotate(cli_project, "--json")
    assert result.exit_code == exit_codes.PULUMI_CLI_MISSING, result.output
    assert path.read_text() == before


def test_rotation_keeps_the_fields_the_file_pins(cli_project: Path, fake: FakeEngine) -> None:
    from tenancy import versions

    path = cli_project / "tenants" / "dev" / "acme.yaml"
    document = yaml.safe_load(path.read_text())
    document["qdrant"] = {
        **document.get("qdrant", {}),
        "enabled": True,
        "version": versions.QDRANT_DEFAULT_VERSION,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    assert rotate(cli_project, "--json").exit_code == 0
    assert yaml.safe_load(path.read_text())["qdrant"]["version"] == versions.QDRANT_DEFAULT_VERSION
