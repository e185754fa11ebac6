"""Shared fixtures: the project directory, and running a stack under Pulumi mocks."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tenancy.render.runtime import StackCapture, capture_stack

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def project_dir() -> Path:
    return PROJECT_DIR


_CAPTURED: dict[str, StackCapture] = {}


def captured_stack(stack: str) -> StackCapture:
    """What the real program of ``stack`` in this project declares under mocks, captured once per
    session (a capture of the project's own files is the same every time: tests/render checks it);
    each caller gets a deep copy of its own, so a test that changes its capture changes no other's."""
    if stack not in _CAPTURED:
        _CAPTURED[stack] = capture_stack(stack, project_dir=PROJECT_DIR)
    return copy.deepcopy(_CAPTURED[stack])


@pytest.fixture
def run_stack() -> Callable[[str], StackCapture]:
    """Run the real program of a stack (``dev``, ``prod.acme``) under mocks and capture what it declares
    (the project's own stacks from the session's captures; another project is captured afresh)."""

    def run(stack: str, project: Path = PROJECT_DIR) -> StackCapture:
        if project == PROJECT_DIR:
            return captured_stack(stack)
        return capture_stack(stack, project_dir=project)

    return run


@pytest.fixture
def scratch_project(tmp_path: Path) -> Path:
    """A copy of the project's Pulumi files and tenants, for tests that change them."""
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    shutil.copytree(PROJECT_DIR / "tenants", tmp_path / "tenants")
    return tmp_path
