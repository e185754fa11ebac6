"""The GitHub workflows that run tenant stacks (`tenantctl sync|up|preview`) hand them every
credential the automation sets as stack config (stack_config.SECRET_SOURCES, e.g. VAULT_TOKEN),
including through a reusable workflow's declared secrets and each caller's `secrets:`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tenancy.automation.stack_config import SECRET_SOURCES
from tests.conftest import PROJECT_DIR

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"
RUNS_TENANT_STACKS = re.compile(r"\btenantctl (sync|up|preview)\b")


def load(path: Path) -> dict[Any, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_every_job_running_tenant_stacks_gets_their_credentials() -> None:
    variables = sorted(set(SECRET_SOURCES.values()))
    checked = 0
    for path in sorted(WORKFLOWS.glob("*.yml")):
        workflow = load(path)
        triggers = workflow.get("on", workflow.get(True)) or {}
        reusable = triggers.get("workflow_call") if isinstance(triggers, dict) else None
        for job_name, job in (workflow.get("jobs") or {}).items():
            for step in job.get("steps") or []:
                if not RUNS_TENANT_STACKS.search(str(step.get("run", ""))):
                    continue
                checked += 1
                env = {**(workflow.get("env") or {}), **(job.get("env") or {}), **(step.get("env") or {})}
                for variable in variables:
                    assert variable in env, (
                        f"{path.name}: job {job_name} runs tenant stacks without {variable}"
                    )
                    if reusable is not None and "secrets." in str(env[variable]):
                        declared = (reusable.get("secrets") or {}).keys()
                        assert variable in declared, f"{path.name}: workflow_call does not declare {variable}"
                        callers = _callers(path.name)
                        assert callers, f"nothing calls {path.name}"
                        for caller, caller_job in callers:
                            passed = caller_job.get("secrets")
                            assert passed == "inherit" or variable in (passed or {}), (
                                f"{caller}: calls {path.name} without passing {variable}"
                            )
    assert checked >= 2  # the deploy's sync and the pull request's previews


def _callers(name: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in (load(path).get("jobs") or {}).values():
            if str(job.get("uses", "")).endswith(f"/{name}"):
                found.append((path.name, job))
    return found
