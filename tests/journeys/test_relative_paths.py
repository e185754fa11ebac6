"""Relative paths (the README's `--project .`, the default `.tenancy`) are resolved once, where
settings are read: nothing below the settings ever sees a relative path, so nothing joins one to a
working directory twice (git runs inside the tenants repository, Pulumi inside the project)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.settings import AutomationSettings
from tenancy.cli import app as tenantctl
from tenancy.service.app import create_app
from tenancy.service.core.config import ServiceSettings
from tests.conftest import PROJECT_DIR


def test_service_settings_make_every_path_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("STATE_DIR", "PROJECT_DIR", "REPO_DIR", "JWKS_FILE"):
        monkeypatch.delenv(f"TENANCY_SERVICE_{name}", raising=False)
    defaults = ServiceSettings()
    assert defaults.state_dir == tmp_path / ".tenancy"
    assert defaults.project_dir == tmp_path
    assert defaults.tenants_repo == tmp_path / ".tenancy" / "tenants-repo"

    given = ServiceSettings(state_dir=Path("st"), repo_dir=Path("repo"), jwks_file=Path("keys/jwks.json"))
    assert (given.state_dir, given.repo_dir, given.jwks_file) == (
        tmp_path / "st",
        tmp_path / "repo",
        tmp_path / "keys" / "jwks.json",
    )
    monkeypatch.setenv("TENANCY_SERVICE_STATE_DIR", "from-env")
    assert ServiceSettings().state_dir == tmp_path / "from-env"


def test_automation_settings_make_every_path_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("PROJECT_DIR", "TENANTS_DIR", "STATE_DIR", "BACKEND_URL"):
        monkeypatch.delenv(f"TENANCY_{name}", raising=False)
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    (tmp_path / "project").mkdir()
    settings = AutomationSettings(project_dir=Path("project"), state_dir=Path("state"))
    assert settings.project_dir == tmp_path / "project"
    assert settings.tenants_dir == tmp_path / "project" / "tenants"
    assert settings.state_dir == tmp_path / "state"
    assert settings.backend_url == (tmp_path / "state" / "pulumi-state").as_uri()
    assert AutomationSettings(project_dir=Path(".")).state_dir == tmp_path / ".tenancy"


def test_the_service_starts_from_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What `tenantctl serve --project .` does: a state directory relative to the working directory.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TENANCY_SERVICE_STATE_DIR", raising=False)
    settings = ServiceSettings(project_dir=Path("."), state_dir=Path(".tenancy"))
    app = create_app(settings, engine=FakeEngine(), seed_tenants=PROJECT_DIR / "tenants")
    repository = app.state.backends.repository
    assert repository.root == tmp_path / ".tenancy" / "tenants-repo"
    assert ("prod", "acme") in repository.names()
    assert repository.history("prod", "acme")  # git found the seeded file where it was committed
    app.state.backends.close()


def test_serve_that_cannot_prepare_its_repository_says_why_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no git
    monkeypatch.delenv("TENANCY_SERVICE_STATE_DIR", raising=False)
    result = CliRunner().invoke(
        tenantctl, ["serve", "--project", str(PROJECT_DIR), "--state-dir", str(tmp_path / "state")]
    )
    assert result.exit_code == 1, result.output
    assert "tenantctl serve could not start: git init could not run" in result.output
    assert "Traceback" not in result.output
    assert shutil.which("git", path=str(empty)) is None


@pytest.mark.parametrize("database", ["operations.sqlite3", "api-keys.sqlite3"])
def test_serve_with_a_corrupted_database_names_the_file_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    """Found by an outside review: garbage over a database's header stopped the start with a 60-line
    traceback ending in "file is not a database", naming no file."""
    monkeypatch.delenv("TENANCY_SERVICE_STATE_DIR", raising=False)
    state = tmp_path / "state"
    state.mkdir()
    (state / database).write_bytes(b"this is not SQLite\n" * 300)
    result = CliRunner().invoke(
        tenantctl, ["serve", "--project", str(PROJECT_DIR), "--state-dir", str(state)]
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"{state / database} is not a readable SQLite database (file is not a database)" in result.output
    assert "restore it from a backup, or move it aside with its -wal and -shm files" in result.output
