"""The tenant commands share their options (tenancy/cli/options.py): a flag reads the same, with the
same environment variable and help, on every command that takes it."""

from __future__ import annotations

from typing import Any

from typer.main import get_command

from tenancy.cli import COMMANDS, app

SHARED_MODULES = ("operations", "backups", "rotation")


def _options_by_flag() -> dict[str, dict[str, tuple[Any, ...]]]:
    group: Any = get_command(app)
    found: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name, (module, _help) in COMMANDS.items():
        if module not in SHARED_MODULES:
            continue
        command = group.real_command(None, name)
        for param in command.params:
            flag = param.opts[0] if param.param_type_name == "option" else f"<{param.name}>"
            found.setdefault(flag, {})[name] = (
                tuple(param.opts),
                getattr(param, "help", None),
                param.envvar,
                param.default,
            )
    return found


def test_a_shared_option_reads_the_same_on_every_tenant_command() -> None:
    by_flag = _options_by_flag()
    assert {"backup", "restore", "rotate-keys", "up"} <= set(by_flag["--env"])
    by_flag["--env"].pop("stacks")  # a filter there ("Only this environment."), not the tenant's
    for flag in ("--env", "--project", "--tenants", "--state-dir", "<tenant>"):
        assert len(set(by_flag[flag].values())) == 1, (flag, by_flag[flag])
    # --url/--token: one wording for the data commands, one for rotate-keys (which else edits the file).
    urls = {command: spec for command, spec in by_flag["--url"].items() if command != "rotate-keys"}
    assert {"backup", "backups", "restore"} <= set(urls) and len(set(urls.values())) == 1
