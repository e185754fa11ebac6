"""``tenantctl``: the one tool people and CI use (validate, render, policy, preview, up, sync, serve, ...).

Each command group lives in its own module and registers itself with ``register(app)``.
``COMMANDS`` names the module and the one-line help of every command, so ``tenantctl --help``
lists them all and ``tenantctl <command>`` imports only the module that command needs (the
Pulumi SDK, the providers, rich and FastAPI cost most of a second to import).
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

# command name -> (module under tenancy.cli, one-line help shown by `tenantctl --help`).
# tests/cli/test_lazy_commands.py checks this against what each module registers.
COMMANDS: dict[str, tuple[str, str]] = {
    "preview": ("operations", "Show what `up` would change for one tenant, without changing anything."),
    "up": ("operations", "Create or update one tenant's stack <env>.<tenant> from its file."),
    "refresh": ("operations", "Read one tenant's resources back from the cluster (drift check)."),
    "destroy": ("operations", "Delete every resource of one tenant and remove its stack."),
    "sync": ("operations", "Bring every tenant stack of an environment in line with tenants/<env>/."),
    "outputs": ("operations", "Print one tenant's stack outputs; secret values are masked."),
    "stacks": ("operations", "List every tenant stack with its last operation."),
    "policy": (
        "policy",
        "Check every rendered stack; exit 3 naming each object, rule and fix on a violation.",
    ),
    "render": (
        "render",
        "Render stacks to OUT/<stack>/ (manifests/, helm/, outputs.yaml, resources.yaml), secrets masked.",
    ),
    "serve": (
        "serve",
        "Start the tenant self-service API (embedded default: SQLite, local git repo, worker threads).",
    ),
    "dev-token": (
        "serve",
        "Print a token from the local issuer, shaped like the platform realm's (for local use only).",
    ),
    "validate": (
        "validate",
        "Validate every tenants/<env>/<name>.yaml; exit 2 naming each file, field and reason on error.",
    ),
    "requests": ("requests", "Change requests that need a platform-admin: list, show, approve, reject."),
    "rotate-keys": ("rotation", "Rotate one tenant's Qdrant API key and read-only key without downtime."),
    "backup": ("backups", "Back up one tenant's Qdrant now (every shard of every collection)."),
    "backups": (
        "backups",
        "List one tenant's complete backups, newest first: id, time, size, collections, checksum.",
    ),
    "restore": ("backups", "Restore a backup of one tenant, into it or into another tenant."),
}


def load_module_commands(module_name: str) -> TyperGroup:
    """Import one command module and return the commands it registers, as a click group."""
    module = importlib.import_module(f"tenancy.cli.{module_name}")
    module_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @module_app.callback()
    def _group() -> None:
        pass

    module.register(module_app)
    group = typer.main.get_command(module_app)
    assert isinstance(group, TyperGroup)
    return group


class _Listed(TyperCommand):
    """What ``--help`` lists for a command whose module is not imported yet."""


class LazyCommands(TyperGroup):
    """The root group: lists ``COMMANDS`` cheaply, imports a command's module only to run it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._loaded: dict[str, TyperGroup] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, help_text = COMMANDS[cmd_name]
        if module_name in self._loaded:
            return self._loaded[module_name].commands.get(cmd_name)
        return _Listed(cmd_name, help=help_text, short_help=help_text)

    def real_command(self, ctx: Any, cmd_name: str) -> Any | None:
        if cmd_name not in COMMANDS:
            return None
        module_name = COMMANDS[cmd_name][0]
        if module_name not in self._loaded:
            try:
                self._loaded[module_name] = load_module_commands(module_name)
            except KeyboardInterrupt:
                # Typer turns Ctrl-C into a silent exit 130: say that nothing was started (a command's
                # own handler says what it left once it runs).
                typer.echo(f"interrupted while {cmd_name} was loading: nothing was read or written", err=True)
                raise typer.Exit(130) from None
        return self._loaded[module_name].commands.get(cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None and isinstance(command, _Listed):
            command = self.real_command(ctx, name)
        return name, command, rest


app = typer.Typer(
    name="tenantctl",
    cls=LazyCommands,
    help="Manage the multi-tenant data platform: validate tenants, render stacks, run tenant stacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Manage the multi-tenant data platform: validate tenants, render stacks, run tenant stacks."""


def main() -> None:
    app()
