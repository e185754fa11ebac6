"""`tenantctl` lists every command without importing any, and imports only what a command needs."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

from typer.testing import CliRunner

import tenancy.cli
from tenancy.cli import COMMANDS, load_module_commands
from tests.conftest import PROJECT_DIR

HEAVY = ("pulumi", "pulumi_kubernetes", "fastapi", "uvicorn", "tenancy.render.write")


def _modules_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_help_imports_no_command_module() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['tenantctl', '--help']\n"
        "from tenancy.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    loaded = _modules_after(code)
    assert not [name for name in HEAVY if name in loaded]
    assert "tenancy.cli.operations" not in loaded


def test_validate_does_not_import_pulumi_or_fastapi() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['tenantctl', 'validate', '--help']\n"
        "from tenancy.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    loaded = _modules_after(code)
    assert "tenancy.cli.validate" in loaded
    assert not [name for name in HEAVY if name in loaded]


def test_validate_without_against_reads_no_history_and_imports_no_rich() -> None:
    # Start-up (issue #11): git history, the platform config and rich are for other paths.
    code = (
        "import sys\n"
        f"sys.argv = ['tenantctl', 'validate', '--tenants', {str(PROJECT_DIR / 'tenants')!r}]\n"
        "from tenancy.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
    )
    loaded = _modules_after(code)
    assert "tenancy.spec.tree" in loaded
    unwanted = (*HEAVY, "rich", "tenancy.spec.history", "tenancy.spec.changes", "tenancy.spec.platform")
    assert not [name for name in unwanted if name in loaded]


def test_registry_names_every_command_each_module_registers_with_its_help() -> None:
    registered: dict[str, tuple[str, str]] = {}
    for info in pkgutil.iter_modules(tenancy.cli.__path__):
        module = importlib.import_module(f"tenancy.cli.{info.name}")
        if not hasattr(module, "register"):
            continue
        for name, command in load_module_commands(info.name).commands.items():
            registered[name] = (info.name, command.get_short_help_str(limit=200))
    assert registered == COMMANDS


def test_every_command_runs_its_real_implementation() -> None:
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(tenancy.cli.app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert f" {name} " in result.output.splitlines()[1] + " ", (name, result.output)
    assert "--tenants" in runner.invoke(tenancy.cli.app, ["validate", "--help"]).output


def test_ctrl_c_while_a_command_loads_says_nothing_was_done_yet(monkeypatch) -> None:
    """Typer turns Ctrl-C into a silent exit 130; while a command's module is still being imported
    (most of a second for render and the stack commands) the person is told nothing was started."""

    def interrupted(module_name: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tenancy.cli, "load_module_commands", interrupted)
    result = CliRunner().invoke(tenancy.cli.app, ["render", "--all"])
    assert result.exit_code == 130
    assert "interrupted while render was loading: nothing was read or written" in result.output
