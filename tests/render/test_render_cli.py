"""``tenantctl render``: one command renders a stack (or all), and can validate what it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenancy.cli import app, exit_codes
from tenancy.render.runtime import capture_program
from tenancy.render.write import RenderedStack, render_capture, write_rendered
from tests.conftest import PROJECT_DIR

runner = CliRunner()


def test_render_one_stack_writes_its_directory(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["render", "--stack", "prod.acme", "--out", str(tmp_path), "--project", str(PROJECT_DIR)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "prod.acme" / "outputs.yaml").is_file()
    assert (tmp_path / "prod.acme" / "helm" / "qdrant.yaml").is_file()
    assert "prod.acme:" in result.output


def test_the_render_of_a_tenant_with_snapshots_shows_its_backup_schedule(tmp_path: Path) -> None:
    import yaml

    result = runner.invoke(
        app, ["render", "--stack", "prod.acme", "--out", str(tmp_path), "--project", str(PROJECT_DIR)]
    )
    assert result.exit_code == 0, result.output
    rendered = tmp_path / "prod.acme"
    job = yaml.safe_load((rendered / "manifests" / "tenant-acme" / "CronJob-qdrant-backup.yaml").read_text())
    assert (job["spec"]["schedule"], job["spec"]["timeZone"]) == ("0 3 * * *", "Etc/UTC")
    assert yaml.safe_load((rendered / "outputs.yaml").read_text())["qdrantBackupSchedule"] == "0 3 * * *"


def test_render_all_renders_both_platform_stacks_and_every_tenant(tmp_path: Path) -> None:
    result = runner.invoke(app, ["render", "--all", "--out", str(tmp_path), "--project", str(PROJECT_DIR)])
    assert result.exit_code == 0, result.output
    assert {"dev", "prod", "prod.acme", "prod.globex", "dev.acme", "dev.initech"} <= {
        p.name for p in tmp_path.iterdir()
    }


def test_render_with_validation_reports_a_valid_stack(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "render",
            "--stack",
            "prod.acme",
            "--validate",
            "--out",
            str(tmp_path),
            "--project",
            str(PROJECT_DIR),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "every built-in object matches the Kubernetes schema" in result.output


@pytest.mark.parametrize("arguments", [[], ["--stack", "dev", "--all"]])
def test_render_needs_exactly_one_of_stack_and_all(arguments: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["render", *arguments, "--out", str(tmp_path), "--project", str(PROJECT_DIR)])
    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "--stack" in result.output


def test_render_of_an_unknown_tenant_names_the_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["render", "--stack", "prod.nobody", "--out", str(tmp_path), "--project", str(PROJECT_DIR)]
    )
    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "nobody.yaml" in result.output


def test_validate_fails_naming_the_file_object_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pulumi_kubernetes as k8s

    def program() -> dict[str, object]:
        k8s.networking.v1.NetworkPolicy(  # type: ignore[call-overload]  # the typo is what is tested
            "typo",
            metadata={"name": "deny", "namespace": "team"},
            spec={"podSelectr": {}, "policyTypes": ["Ingress"]},
        )
        return {}

    broken = render_capture(capture_program(program, stack="dev.team"))

    def fake_render(stack: str, *, project_dir: Path, out: Path) -> tuple[RenderedStack, Path]:
        return broken, write_rendered(broken, out)

    monkeypatch.setattr("tenancy.render.batch.render_stack", fake_render)
    result = runner.invoke(
        app,
        [
            "render",
            "--stack",
            "dev.team",
            "--validate",
            "--out",
            str(tmp_path),
            "--project",
            str(PROJECT_DIR),
        ],
    )
    assert result.exit_code == exit_codes.OPERATION_FAILED
    assert "NetworkPolicy-deny.yaml: NetworkPolicy team/deny: spec" in result.output
    assert "podSelectr" in result.output
