"""``tenantctl validate``: check the whole tenants/ tree (what CI runs on every pull request)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tenancy.cli import exit_codes
from tenancy.spec.errors import SpecError
from tenancy.spec.tree import load_tenants

TenantsOption = Annotated[
    Path, typer.Option("--tenants", help="The tenants directory.", envvar="TENANCY_TENANTS_DIR")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable results.")]


def validate(tenants: TenantsOption = Path("tenants"), as_json: JsonOption = False) -> None:
    """Validate every tenants/<env>/<name>.yaml; exit 2 naming each file, field and reason on error."""
    try:
        tree = load_tenants(tenants)
    except SpecError as error:
        if as_json:
            issues = [{"file": i.file, "field": i.field, "reason": i.reason} for i in error.issues]
            typer.echo(json.dumps({"valid": False, "issues": issues}, indent=2))
        else:
            for issue in error.issues:
                typer.echo(f"error: {issue}", err=True)
            typer.echo(f"{len(error.issues)} problem(s) in {tenants}", err=True)
        raise typer.Exit(exit_codes.INVALID_INPUT) from None
    if as_json:
        files = [{"environment": f.environment, "name": f.spec.name, "file": str(f.path)} for f in tree.files]
        typer.echo(json.dumps({"valid": True, "tenants": files}, indent=2))
    else:
        typer.echo(f"{len(tree.files)} tenant file(s) valid in {tenants}")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
