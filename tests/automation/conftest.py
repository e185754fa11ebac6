"""Fixtures for the automation layer: a queue in a temporary directory, the engine double, and a
scratch project the CLI runs against."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tenancy.automation.contract import StackRef
from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.queue import SqliteOperationQueue

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from TENANCY_* and PULUMI_* variables: tests must not see the developer's."""
    for name in list(os.environ):
        if name.startswith("TENANCY_") or name in ("PULUMI_BACKEND_URL", "CI", "GITHUB_ACTOR"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[SqliteOperationQueue]:
    operations = SqliteOperationQueue(tmp_path / "operations.sqlite3")
    yield operations
    operations.close()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def tenant_spec(name: str, **changes: Any) -> dict[str, Any]:
    """A valid tenant document (as TenantSpec.to_document() writes it)."""
    spec: dict[str, Any] = {"name": name, "owners": [f"team@{name}.example"], "plan": "small"}
    spec.update(changes)
    return spec


@pytest.fixture
def spec() -> Callable[..., dict[str, Any]]:
    return tenant_spec


def stack(tenant: str, environment: str = "dev") -> StackRef:
    return StackRef(environment, tenant)


@pytest.fixture
def cli_project(tmp_path: Path) -> Path:
    """The project's Pulumi files and tenants/ in a temporary directory (state under it too)."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        shutil.copy(PROJECT_DIR / name, project / name)
    shutil.copytree(PROJECT_DIR / "tenants", project / "tenants")
    return project
