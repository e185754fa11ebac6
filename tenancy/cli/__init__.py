"""``tenantctl``: the one tool people and CI use (validate, render, policy, preview, up, sync, serve, ...).

Each command group lives in its own module and registers itself on ``app``.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="tenantctl",
    help="Manage the multi-tenant data platform: validate tenants, render stacks, run tenant stacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Manage the multi-tenant data platform: validate tenants, render stacks, run tenant stacks."""


# Every module of this package with a ``register(app)`` contributes its commands.
for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    module = importlib.import_module(f"tenancy.cli.{info.name}")
    if hasattr(module, "register"):
        module.register(app)


def main() -> None:
    app()
