"""The engine with a read-only project (the self-service pods: /app on a read-only root, owned by root):
creating a tenant stack and setting its config writes the stack settings file ``Pulumi.<stack>.yaml``,
which must land in ``TENANCY_WORKSPACE_DIR`` (a view of the project), never in the project.

The Pulumi CLI is replaced by a stand-in that writes what the real one writes and where: it finds the
project walking up from its working directory (without resolving links) and writes the stack settings
file beside that ``Pulumi.yaml``; it refuses a write where the directory's mode forbids one, as the pods'
UID 10001 would be refused (these tests may run as root). With the real CLI the same flow runs below,
skipped where the CLI is missing."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tenancy.automation.errors import EngineFailed
from tenancy.automation.project_view import forget_prepared_views, prepare_project_view
from tenancy.automation.pulumi_engine import PulumiEngine, config_values
from tenancy.automation.settings import AutomationSettings
from tenancy.automation.stack_config import StackConfig

from .conftest import PROJECT_DIR, stack

STAND_IN = r"""
import json, os, sys
from pathlib import Path

args = [a for a in sys.argv[1:] if a != "--non-interactive"]
if args[:1] == ["version"]:
    print("v3.272.0"); sys.exit(0)
backend = Path(os.environ["PULUMI_BACKEND_URL"].removeprefix("file://")) / "stacks"

def fail(message):
    print(f"error: {message}", file=sys.stderr); sys.exit(255)

def settings_file(name):
    here = Path(os.getcwd())
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").exists():
            return folder / f"Pulumi.{name}.yaml"
    fail("no Pulumi.yaml project file found")

def write(path, document):
    if not os.stat(path.parent).st_mode & 0o222:
        fail(f"open {path}: permission denied")
    path.write_text(json.dumps(document))

def option(name):
    return args[args.index(name) + 1]

if args[:2] == ["stack", "select"]:
    name = option("--stack")
    if not (backend / name).exists():
        fail(f"no stack named '{name}' found")
elif args[:2] == ["stack", "init"]:
    name = args[2]
    backend.mkdir(parents=True, exist_ok=True)
    if (backend / name).exists():
        fail(f"stack '{name}' already exists")
    write(settings_file(name), {"encryptionsalt": "v1:stand-in", "config": {}})
    (backend / name).write_text("{}")
elif args[:2] == ["config", "set-all"]:
    path = settings_file(option("--stack"))
    document = json.loads(path.read_text()) if path.exists() else {"config": {}}
    for flag, pair in zip(args, args[1:]):
        if flag in ("--plaintext", "--secret"):
            key, _, value = pair.partition("=")
            document["config"][key] = {"secure": "v1:..."} if flag == "--secret" else value
    write(path, document)
else:
    fail("unexpected command " + " ".join(args))
"""


@pytest.fixture(autouse=True)
def fresh_views() -> Iterator[None]:
    forget_prepared_views()
    yield
    forget_prepared_views()


@pytest.fixture
def read_only_project(tmp_path: Path) -> Iterator[Path]:
    """A copy of the project's Pulumi files, mode 0555 like /app in the image (restored afterwards)."""
    project = tmp_path / "app"
    project.mkdir()
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml", "__main__.py"):
        shutil.copy(PROJECT_DIR / name, project / name)
    (project / ".venv").symlink_to(PROJECT_DIR / ".venv")
    project.chmod(0o555)
    yield project
    project.chmod(0o755)


@pytest.fixture
def stand_in_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pulumi"
    script.write_text(f"#!{sys.executable}\n{STAND_IN}")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "tenancy-tests")


def engine_for(tmp_path: Path, project: Path, workspace: Path | None) -> PulumiEngine:
    return PulumiEngine(
        AutomationSettings(project_dir=project, state_dir=tmp_path / "state", workspace_dir=workspace)
    )


def create_with_config(engine: PulumiEngine) -> None:
    """What ``run`` does before the update: select or create the stack, then set its config."""
    workspace = engine._workspace()
    selected, created = engine._select(workspace, stack("acme"), create=True)
    assert created
    selected.set_all_config(
        config_values(StackConfig(plain={"platform:tenant": "acme"}, secret={"platform:token": "s3cr3t"}))
    )


def test_with_a_workspace_dir_the_stack_settings_file_is_written_there_not_in_the_project(
    tmp_path: Path, read_only_project: Path, stand_in_cli: None
) -> None:
    before = sorted(os.listdir(read_only_project))
    workspace = tmp_path / "workspace"

    create_with_config(engine_for(tmp_path, read_only_project, workspace))

    assert sorted(os.listdir(read_only_project)) == before
    written = json.loads((workspace / "Pulumi.dev.acme.yaml").read_text())
    assert written["encryptionsalt"] and written["config"]["platform:tenant"] == "acme"
    assert "s3cr3t" not in (workspace / "Pulumi.dev.acme.yaml").read_text()
    # The CLI finds the project and its virtualenv through the view's links.
    assert (workspace / "Pulumi.yaml").resolve() == read_only_project / "Pulumi.yaml"
    assert (workspace / ".venv" / "bin").is_dir()


def test_without_a_workspace_dir_a_read_only_project_refuses_the_stack_settings_file(
    tmp_path: Path, read_only_project: Path, stand_in_cli: None
) -> None:
    """Today's pods: the stack is created in the backend, and writing its settings file fails."""
    with pytest.raises(EngineFailed, match="permission denied"):
        create_with_config(engine_for(tmp_path, read_only_project, None))


def test_the_view_is_built_once_per_process_and_safely_by_concurrent_builders(
    tmp_path: Path, read_only_project: Path
) -> None:
    view = tmp_path / "view"
    view.mkdir()
    (view / "Pulumi.dev.acme.yaml").write_text("config: {}\n")  # written by an earlier operation: kept
    (view / "__main__.py").symlink_to(tmp_path / "elsewhere.py")  # a stale link: replaced
    errors: list[BaseException] = []

    def build() -> None:
        try:
            for _ in range(5):
                forget_prepared_views()
                prepare_project_view(read_only_project, view)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    names = sorted(os.listdir(view))
    assert names == sorted([*os.listdir(read_only_project), "Pulumi.dev.acme.yaml"])
    assert (view / "__main__.py").resolve() == read_only_project / "__main__.py"
    assert (view / "Pulumi.dev.acme.yaml").read_text() == "config: {}\n"


def test_a_laptops_tenant_stack_files_in_the_project_are_not_linked(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.dev.acme.yaml", "__main__.py"):
        (project / name).write_text("name: platform\n")

    view = prepare_project_view(project, tmp_path / "view")

    assert sorted(os.listdir(view)) == ["Pulumi.dev.yaml", "Pulumi.yaml", "__main__.py"]


def test_a_workspace_dir_that_cannot_be_made_is_a_clear_engine_error(
    tmp_path: Path, read_only_project: Path, stand_in_cli: None
) -> None:
    with pytest.raises(EngineFailed, match=r"TENANCY_WORKSPACE_DIR=.*view.*Pulumi\.yaml"):
        engine_for(tmp_path, tmp_path / "missing", tmp_path / "view")._workspace()


def test_the_workspace_dir_comes_from_tenancy_workspace_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_WORKSPACE_DIR", str(tmp_path / "ws"))
    settings = AutomationSettings(project_dir=tmp_path)
    assert settings.work_dir == tmp_path / "ws"
    monkeypatch.delenv("TENANCY_WORKSPACE_DIR")
    assert AutomationSettings(project_dir=tmp_path).work_dir == tmp_path


@pytest.mark.pulumi_cli
@pytest.mark.skipif(shutil.which("pulumi") is None, reason="needs the Pulumi CLI on PATH")
def test_the_real_cli_writes_the_stack_settings_file_in_the_view(
    tmp_path: Path, read_only_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "tenancy-tests")
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "pulumi-home"))
    before = sorted(os.listdir(read_only_project))
    workspace = tmp_path / "workspace"

    create_with_config(engine_for(tmp_path, read_only_project, workspace))

    assert sorted(os.listdir(read_only_project)) == before
    written = yaml.safe_load((workspace / "Pulumi.dev.acme.yaml").read_text())
    assert written["encryptionsalt"] and written["config"]["platform:tenant"] == "acme"
