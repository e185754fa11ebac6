"""The GitHub workflows hold to what zizmor checks (CI runs zizmor itself too, in .ci/run)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PROJECT_DIR

WORKFLOWS = sorted((PROJECT_DIR / ".github" / "workflows").glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


def _steps(workflow: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for job in workflow["jobs"].values():
        yield from job.get("steps", [])


def _uses_lines(path: Path) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^\s*(?:- )?uses: (.+)$", path.read_text(), re.M)]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_with_its_version_beside_it(path: Path) -> None:
    for uses in _uses_lines(path):
        if uses.startswith("./"):
            continue  # a workflow of this repository, at this commit
        assert PINNED.match(uses), f"{path.name}: {uses} is not pinned as owner/repo@<sha> # vX.Y.Z"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_checkouts_leave_no_token_behind(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text())
    for step in _steps(workflow):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, path.name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_secrets_are_inherited_and_no_expression_is_expanded_inside_a_script(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text())
    for job in workflow["jobs"].values():
        assert job.get("secrets") != "inherit", f"{path.name}: pass the secrets the called workflow needs"
    for step in _steps(workflow):
        # Values reach scripts through env: a ${{ }} inside run: is pasted into the shell as code.
        assert "${{" not in step.get("run", ""), f"{path.name}: step {step.get('name')!r}"
