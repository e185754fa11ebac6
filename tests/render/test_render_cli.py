"""``tenantctl render``: one command renders a stack (or all), and can validate what it wrote."""

from __future__ import annotations

import shutil
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


def test_render_all_again_removes_the_stacks_of_tenants_that_are_gone(tmp_path: Path) -> None:
    # A second `render --all` into the same OUT after a tenant file was removed (or renamed): its old
    # directory would otherwise stay, and `tenantctl policy OUT` and a diff of renders would still
    # see a stack that no longer exists.
    project = tmp_path / "project"
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_DIR / name, project / name)
    (project / "tenants" / "dev").mkdir(parents=True)
    (project / "tenants" / "prod").mkdir()
    for name in ("acme", "initech"):
        shutil.copy(PROJECT_DIR / "tenants" / "dev" / f"{name}.yaml", project / "tenants" / "dev")
    out = tmp_path / "render"
    arguments = ["render", "--all", "--out", str(out), "--project", str(project), "--jobs", "1"]
    first = runner.invoke(app, arguments)
    assert first.exit_code == 0, first.output
    assert (out / "dev.initech" / "outputs.yaml").is_file()
    # Beside the renders: what render did not write stays, even in a stack's place.
    (out / "notes").mkdir()
    (out / "notes" / "outputs.yaml").write_text("mine\n")
    shutil.copytree(out / "dev.acme", out / "dev.kept")
    (out / "dev.kept" / "review.md").write_text("mine\n")

    (project / "tenants" / "dev" / "initech.yaml").unlink()
    second = runner.invoke(app, arguments)

    assert second.exit_code == 0, second.output
    assert not (out / "dev.initech").exists()
    assert f"removed {out / 'dev.initech'}: dev.initech is no longer a stack" in second.output
    assert sorted(p.name for p in out.iterdir()) == ["dev", "dev.acme", "dev.kept", "notes", "prod"]
    assert (out / "dev.kept" / "review.md").is_file() and (out / "notes" / "outputs.yaml").is_file()


def test_render_of_one_stack_leaves_the_other_stacks_alone(tmp_path: Path) -> None:
    (tmp_path / "dev.initech" / "manifests").mkdir(parents=True)
    (tmp_path / "dev.initech" / "outputs.yaml").write_text("{}\n")
    result = runner.invoke(
        app, ["render", "--stack", "dev.acme", "--out", str(tmp_path), "--project", str(PROJECT_DIR)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dev.initech" / "outputs.yaml").is_file()


def test_a_stack_name_that_is_not_one_names_the_option_not_a_file(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["render", "--stack", "staging.acme", "--out", str(tmp_path), "--project", str(PROJECT_DIR)]
    )
    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "error: stack 'staging.acme': name: stacks are named <env>" in result.output
    assert "(file)" not in result.output


def test_the_project_comes_from_tenancy_project_dir_as_for_the_stack_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no Pulumi.yaml here
    result = runner.invoke(
        app,
        ["render", "--stack", "staging.acme", "--out", str(tmp_path / "out")],
        env={"TENANCY_PROJECT_DIR": str(PROJECT_DIR)},
    )
    # Past the project check (which would say ". has no Pulumi.yaml") to the stack name's.
    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "error: stack 'staging.acme'" in result.output, result.output


def test_ctrl_c_says_what_the_output_directory_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found following the README: Ctrl-C during render --all exited 130 saying nothing, while the
    stack being written may be partial."""
    import tenancy.cli.render as render_cli

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(render_cli, "render_stacks", interrupted)
    result = runner.invoke(app, ["render", "--all", "--out", str(tmp_path), "--project", str(PROJECT_DIR)])
    assert result.exit_code == exit_codes.INTERRUPTED == 130
    assert f"interrupted: {tmp_path} may hold this render's stacks beside older ones" in result.output
