"""A platform engineer's pull request that changes only `Pulumi.<env>.yaml`, through the workflows'
own scripts (run as GitHub would run them, in a git repository holding the change).

Tenant stacks read their environment's `Pulumi.<env>.yaml` (the API server's and DNS's addresses,
vCluster images, Vault, backups): such a change changes every tenant stack of the environment. The
pull request must render and policy-check them and preview an update of each, and the deploy must
update them all (`sync --all`); before, only the platform stack was rendered and `sync` left every
tenant "unchanged", with the old API server addresses in their NetworkPolicies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenancy.render.runtime import capture_stack
from tenancy.render.write import render_capture
from tests.conftest import PROJECT_DIR

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"


def _step(workflow: str, name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / workflow).read_text(encoding="utf-8"))
    for job in document["jobs"].values():
        for step in job.get("steps") or []:
            if step.get("name") == name:
                return dict(step)
    raise AssertionError(f"{workflow} has no step {name!r}")


def _git(repository: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repository), "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """The project's tenants and stack files, committed; then a commit changing only dev's API server
    addresses (the control plane moved)."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copytree(PROJECT_DIR / "tenants", root / "tenants")
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        shutil.copy(PROJECT_DIR / name, root / name)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "base")
    config = root / "Pulumi.dev.yaml"
    text = config.read_text(encoding="utf-8")
    assert "    - 10.10.0.2/32\n" in text
    config.write_text(text.replace("    - 10.10.0.2/32\n", "    - 10.10.0.9/32\n"), encoding="utf-8")
    _git(root, "commit", "-q", "-am", "dev's control plane moved")
    return root


def _run(script: str, *, cwd: Path, env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Run a step's script with bash as the runner does; what it wrote to GITHUB_OUTPUT."""
    output = tmp_path / "github-output"
    output.write_text("")
    python_dir = str(Path(sys.executable).parent)  # `python` on PATH, as setup-python leaves it
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=cwd,
        env={
            **os.environ,
            "PATH": f"{python_dir}{os.pathsep}{os.environ['PATH']}",
            "GITHUB_OUTPUT": str(output),
            **env,
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)


def test_the_tenant_stacks_read_their_environments_platform_config(repository: Path) -> None:
    # What makes the rest necessary: dev.acme's render follows Pulumi.dev.yaml.
    before = render_capture(capture_stack("dev.acme", project_dir=PROJECT_DIR)).files
    after = render_capture(capture_stack("dev.acme", project_dir=repository)).files
    policy = "manifests/tenant-acme/NetworkPolicy-allow-vcluster-to-apiserver.yaml"
    assert "10.10.0.2/32" in before[policy] and "10.10.0.9/32" in after[policy]


def test_the_pull_request_renders_every_tenant_of_the_environment(repository: Path, tmp_path: Path) -> None:
    step = _step("pull-request.yml", "Find the stacks this change touches")
    base = _git(repository, "rev-parse", "HEAD^")
    outputs = _run(step["run"], cwd=repository, env={"BASE_SHA": base}, tmp_path=tmp_path)
    assert outputs["stacks"].split() == ["dev", "dev.acme", "dev.initech"], outputs
    changes = json.loads(outputs["changes"])
    assert changes == {"dev": {"tenants": [], "removed": [], "platform": True, "program": False}}

    # The preview then asks sync what it will do to every tenant, not only to changed files.
    preview = _step("pull-request.yml", "Preview")["run"]
    line = re.search(r"^\s*all=\$\(python -c '(?P<code>[^']+)'\)$", preview, re.M)
    assert line, preview
    flag = subprocess.run(
        [sys.executable, "-c", line.group("code")],
        env={**os.environ, "CHANGES": json.dumps(changes["dev"])},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert flag == "--all"


def test_a_tenant_moved_to_another_environment_is_previewed_as_removed_where_it_was(
    repository: Path, tmp_path: Path
) -> None:
    """Found by an outside review: git's rename detection listed only the new path of a file moved
    from dev to prod, so the pull request showed nothing for dev, whose deploy then destroyed it."""
    _git(repository, "mv", "tenants/dev/initech.yaml", "tenants/prod/initech.yaml")
    _git(repository, "commit", "-q", "-m", "initech moves to prod")
    step = _step("pull-request.yml", "Find the stacks this change touches")
    base = _git(repository, "rev-parse", "HEAD^")
    outputs = _run(step["run"], cwd=repository, env={"BASE_SHA": base}, tmp_path=tmp_path)
    changes = json.loads(outputs["changes"])
    assert changes["dev"]["removed"] == ["initech"] and changes["prod"]["tenants"] == ["initech"], changes


@pytest.mark.parametrize(("environment", "flags"), [("dev", "--all"), ("prod", None)])
def test_the_deploy_updates_every_tenant_of_the_changed_environment_only(
    repository: Path, tmp_path: Path, environment: str, flags: str | None
) -> None:
    step = _step("deploy-environment.yml", "Decide whether every tenant must be updated")
    outputs = _run(
        step["run"], cwd=repository, env={"ENVIRONMENT": environment, "ALL": "false"}, tmp_path=tmp_path
    )
    assert outputs.get("flags") == flags, outputs
