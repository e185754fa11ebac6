"""Shared fixtures: the project directory, and running a stack under Pulumi mocks."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tenancy.render.runtime import StackCapture, capture_stack

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def project_dir() -> Path:
    return PROJECT_DIR


@pytest.fixture
def run_stack() -> Callable[[str], StackCapture]:
    """Run the real program of a stack (``dev``, ``prod.acme``) under mocks and capture what it declares."""

    def run(stack: str, project: Path = PROJECT_DIR) -> StackCapture:
        return capture_stack(stack, project_dir=project)

    return run


@pytest.fixture
def scratch_project(tmp_path: Path) -> Path:
    """A copy of the project's Pulumi files and tenants, for tests that change them."""
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    shutil.copytree(PROJECT_DIR / "tenants", tmp_path / "tenants")
    return tmp_path
