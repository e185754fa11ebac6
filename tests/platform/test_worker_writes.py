"""Journey: a tenant operation in the self-service pods the real dev and prod platform programs render
(under mocks). The pods' root filesystem is read-only and the project (/app) is root-owned, so every
directory the engine and the Pulumi CLI write, as the container's environment configures them, must lie
on a writable volume mount: the CLI's work directory and the stack settings files it writes there
(``Pulumi.<env>.<tenant>.yaml``), the file backend, the operations' scratch specs, the state directory,
``$PULUMI_HOME/workspaces`` (the selected stack) and the temporary directory. The project itself must not
need to be writable (before TENANCY_WORKSPACE_DIR every ``stack init`` wrote into /app and failed).

What the CLI writes, and where, was read in pulumi/pulumi's Go sources (README, "What needs the Pulumi CLI":
no CLI runs here); each entry of the model below names the upstream file and function it comes from."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tenancy.automation import pulumi_engine
from tenancy.automation.settings import AutomationSettings
from tenancy.builders.selfservice import API_NAME, PROJECT_DIR, WORKER_NAME
from tests.platform.test_secret_reveal import PROVIDER_VARIABLES, _platform, _pod, pod_environment
from tests.platform.test_selfservice_image import stages

TENANT = "acme"


class RecordingWorkspace:
    """Stands in for LocalWorkspace: records the directory the CLI would run in and the environment the
    engine adds for it."""

    work_dirs: list[str] = []
    env_vars: list[dict[str, str]] = []

    def __init__(self, *, work_dir: str, env_vars: dict[str, str], **_: Any) -> None:
        self.work_dirs.append(work_dir)
        self.env_vars.append(dict(env_vars))


def image_environment() -> dict[str, str]:
    """The ENV of the self-service image's final stage (the pods' env adds to it and wins); values that
    expand another variable (PATH) are left out."""
    final = stages()[-1]
    found: dict[str, str] = {}
    for keyword, rest in final:
        if keyword == "ENV":
            for item in rest.split():
                name, _, value = item.partition("=")
                if "$" not in value:
                    found[name] = value
    return found


def truthy(value: str | None) -> bool:
    """How the CLI reads its boolean variables: "1" or "true" in any case, anything else is false
    (pulumi/pulumi sdk/go/common/util/env/env.go, BoolValue.Value)."""
    return value is not None and (value == "1" or value.lower() == "true")


def writable_mount(pod: dict[str, Any], path: PurePosixPath) -> str | None:
    """The writable mount ``path`` lies under in the pod's only container (None: the read-only root)."""
    [container] = pod["containers"]
    mounts = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return None if mount.get("readOnly") else str(mount["mountPath"])


def engine_work_dir(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Any, dict[str, str]]:
    """The directory the pod's engine hands the CLI, with the pod's environment (the view itself is not
    built here: its directory is the pod's), and the environment the CLI runs with."""
    for name in (*PROVIDER_VARIABLES, "TENANCY_WORKSPACE_DIR", "TENANCY_STATE_DIR", "PULUMI_HOME", "TMPDIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    RecordingWorkspace.work_dirs = []
    RecordingWorkspace.env_vars = []
    monkeypatch.setattr(pulumi_engine, "LocalWorkspace", RecordingWorkspace)
    monkeypatch.setattr(pulumi_engine, "_checked_command", lambda minimum: object())
    monkeypatch.setattr(pulumi_engine, "prepare_project_view", lambda project, view: view, raising=False)
    engine = pulumi_engine.PulumiEngine(AutomationSettings())
    engine._workspace(needs_secrets=False, writes_backend=False)
    [work_dir] = RecordingWorkspace.work_dirs
    [added] = RecordingWorkspace.env_vars
    return Path(work_dir), engine.settings, {**environment, **added}


@pytest.mark.parametrize("environment", ["dev", "prod"])
@pytest.mark.parametrize("deployment", [WORKER_NAME, API_NAME])
def test_every_directory_a_tenant_operation_writes_is_on_a_writable_mount(
    environment: str, deployment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = _platform(environment).capture
    env = pod_environment(capture, deployment)
    pod = _pod(capture, deployment)
    work_dir, settings, _ = engine_work_dir(env, monkeypatch)
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


# What the CLI writes under $PULUMI_HOME in the workers' flows (stack init/select, config set-all,
# preview/up/refresh/destroy, stack export/import, cancel, stack rm) other than workspaces/, which the test
# above puts on a writable mount. Each is either avoided by the environment, or best-effort: the CLI logs
# the failure and carries on, so $PULUMI_HOME itself stays on the read-only root.
#   credentials.json: written only by a login that sets the current backend, and the CLI sets it only when
#     no backend URL is known (pkg/cmd/pulumi/backend/backend.go CurrentBackend: setCurrent = url == "",
#     the URL taken first from PULUMI_BACKEND_URL in pkg/workspace/creds.go GetCurrentCloudURLWithSource;
#     pkg/backend/diy/backend.go Login -> workspace.StoreAccount).
#   .cachedVersionInfo: the update check, skipped when PULUMI_SKIP_UPDATE_CHECK is true
#     (pkg/cmd/pulumi/pulumi.go, the root command's PersistentPreRunE).
#   plugins/<kind>-<name>-v<version>{,.lock,.partial}: an install of a plugin the program needs and the
#     cache lacks (pkg/engine/plugins.go ensurePluginsAreInstalled); refused outright, without a download,
#     when PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION is true. The image bakes them in
#     (tests/platform/test_selfservice_image.py checks versions and modes).
#   logs/pulumi-<time>-<pid>-<command>.log: automatic logging on every command, best-effort
#     (pkg/logging/encrypted.go StartLogging; pkg/cmd/pulumi/pulumi.go logs the error and goes on).
#   plugins/<entry>.lastused: a plugin's last use, best-effort (sdk/go/common/workspace/plugins.go
#     markPluginUsed).
AVOIDED_HOME_WRITES = {
    "credentials.json": "PULUMI_BACKEND_URL",
    ".cachedVersionInfo": "PULUMI_SKIP_UPDATE_CHECK",
    "plugins (a download)": "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION",
}


@pytest.mark.parametrize("environment", ["dev", "prod"])
@pytest.mark.parametrize("deployment", [WORKER_NAME, API_NAME])
def test_the_cli_writes_nothing_else_in_its_read_only_home(
    environment: str, deployment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = _platform(environment).capture
    pod = _pod(capture, deployment)
    env = {**image_environment(), **pod_environment(capture, deployment)}
    _, _, cli_env = engine_work_dir(env, monkeypatch)

    # An explicit PULUMI_HOME: the CLI uses it as given (no fall-back to another directory when it is not
    # writable: sdk/go/common/workspace/paths.go GetPulumiPath, pulumiHomeDirForPath).
    home = PurePosixPath(cli_env["PULUMI_HOME"])
    assert writable_mount(pod, home) is None, "the CLI's home is expected read-only (baked plugins)"
    assert writable_mount(pod, home / "workspaces")
    assert cli_env.get("PULUMI_BACKEND_URL"), "without it, the CLI logs in and writes credentials.json"
    for what, variable in AVOIDED_HOME_WRITES.items():
        if variable != "PULUMI_BACKEND_URL":
            unset = f"{deployment}: {variable} unset: the CLI writes {home}/{what}"
            assert truthy(cli_env.get(variable)), unset


# The Python language host lists the program's packages with `python -m pip list --format json` on every
# preview and update (pulumi/pulumi sdk/python/toolchain/pip.go ListPackages, called by
# sdk/python/cmd/pulumi-language-python/main.go listPulumiPackageInfos). Before answering, pip asks the
# package index for a newer pip (pip/_internal/cli/index_command.py IndexGroupCommand.pip_version_check,
# a 5 s timeout), which the pods' egress does not allow: each operation would wait and warn. pip reads
# its options from PIP_<OPTION> variables, so PIP_DISABLE_PIP_VERSION_CHECK turns the check off.
@pytest.mark.parametrize("environment", ["dev", "prod"])
@pytest.mark.parametrize("deployment", [WORKER_NAME, API_NAME])
def test_the_language_hosts_pip_list_asks_no_package_index(
    environment: str, deployment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = _platform(environment).capture
    env = {**image_environment(), **pod_environment(capture, deployment)}
    _, _, cli_env = engine_work_dir(env, monkeypatch)
    assert cli_env.get("PIP_DISABLE_PIP_VERSION_CHECK", "").lower() in {"1", "true", "yes", "on"}, (
        f"{deployment}: every preview's `pip list` would first ask PyPI for a newer pip"
    )
    assert pod_environment(capture, deployment).get("PIP_DISABLE_PIP_VERSION_CHECK") == "1"
    assert image_environment().get("PIP_DISABLE_PIP_VERSION_CHECK") == "1"
