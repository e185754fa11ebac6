"""Journey: a tenant operation in the self-service pods the real dev and prod platform programs render
(under mocks). The pods' root filesystem is read-only and the project (/app) is root-owned, so every
directory the engine and the Pulumi CLI write, as the container's environment configures them, must lie
on a writable volume mount: the CLI's work directory and the stack settings files it writes there
(``Pulumi.<env>.<tenant>.yaml``), the file backend, the operations' scratch specs, the state directory,
``$PULUMI_HOME/workspaces`` (the selected stack) and the temporary directory. The project itself must not
need to be writable (before TENANCY_WORKSPACE_DIR every ``stack init`` wrote into /app and failed)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tenancy.automation import pulumi_engine
from tenancy.automation.settings import AutomationSettings
from tenancy.builders.selfservice import API_NAME, PROJECT_DIR, WORKER_NAME
from tests.platform.test_secret_reveal import PROVIDER_VARIABLES, _platform, _pod, pod_environment

TENANT = "acme"


class RecordingWorkspace:
    """Stands in for LocalWorkspace: records the directory the CLI would run in."""

    work_dirs: list[str] = []

    def __init__(self, *, work_dir: str, **_: Any) -> None:
        self.work_dirs.append(work_dir)


def writable_mount(pod: dict[str, Any], path: PurePosixPath) -> str | None:
    """The writable mount ``path`` lies under in the pod's only container (None: the read-only root)."""
    [container] = pod["containers"]
    mounts = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return None if mount.get("readOnly") else str(mount["mountPath"])


def engine_work_dir(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Any]:
    """The directory the pod's engine hands the CLI, with the pod's environment (the view itself is not
    built here: its directory is the pod's)."""
    for name in (*PROVIDER_VARIABLES, "TENANCY_WORKSPACE_DIR", "TENANCY_STATE_DIR", "PULUMI_HOME", "TMPDIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    RecordingWorkspace.work_dirs = []
    monkeypatch.setattr(pulumi_engine, "LocalWorkspace", RecordingWorkspace)
    monkeypatch.setattr(pulumi_engine, "_checked_command", lambda minimum: object())
    monkeypatch.setattr(pulumi_engine, "prepare_project_view", lambda project, view: view, raising=False)
    engine = pulumi_engine.PulumiEngine(AutomationSettings())
    engine._workspace(needs_secrets=False, writes_backend=False)
    [work_dir] = RecordingWorkspace.work_dirs
    return Path(work_dir), engine.settings


@pytest.mark.parametrize("environment", ["dev", "prod"])
@pytest.mark.parametrize("deployment", [WORKER_NAME, API_NAME])
def test_every_directory_a_tenant_operation_writes_is_on_a_writable_mount(
    environment: str, deployment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = _platform(environment).capture
    env = pod_environment(capture, deployment)
    pod = _pod(capture, deployment)
    work_dir, settings = engine_work_dir(env, monkeypatch)
    stack_name = f"{environment}.{TENANT}"

    written = {
        "the CLI's work directory": work_dir,
        "the stack settings file's directory": (work_dir / f"Pulumi.{stack_name}.yaml").parent,
        "$PULUMI_HOME/workspaces": Path(env.get("PULUMI_HOME", "/nonexistent-home/.pulumi")) / "workspaces",
        "the temporary directory": Path(env.get("TMPDIR", "/tmp")),
    }
    if deployment == WORKER_NAME:  # the API only reads the workers' state
        written["the state directory"] = settings.state_dir
        written["the operations' scratch specs"] = settings.operations_dir
        if settings.uses_file_backend:
            written["the file backend"] = pulumi_engine._file_backend_path(settings.backend_url)

    project = PurePosixPath(PROJECT_DIR)
    assert str(settings.project_dir) == PROJECT_DIR
    for what, path in written.items():
        posix = PurePosixPath(path)
        assert writable_mount(pod, posix), f"{deployment}: {what} {path} is on the read-only root"
        assert not posix.is_relative_to(project), f"{deployment}: {what} {path} is inside the project"
    # The program stays read-only: no writable mount covers the project.
    assert writable_mount(pod, project) is None
