"""``tenantctl validate``: check the whole tenants/ tree (what CI runs on every pull request)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tenancy.cli import exit_codes
from tenancy.cli.options import ProjectOption, TenantsOption
from tenancy.spec.errors import SpecError
from tenancy.spec.tenant import resolve
from tenancy.spec.tree import TenantTree, load_tenants

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable results.")]
AgainstOption = Annotated[
    str | None,
    typer.Option(
        "--against",
        help="A git revision (e.g. origin/main) holding the specs already applied: also refuse changes "
        "that volumes cannot follow (a new default size after a plan change, a new platform:storageClass "
        "under volumes that use the default), Qdrant scale-downs that change volumes too, and Qdrant version "
        "downgrades (a scale-down alone is accepted: the worker drains the departing nodes).",
    ),
]


def validate(
    tenants: TenantsOption = None,
    as_json: JsonOption = False,
    against: AgainstOption = None,
    project: ProjectOption = None,
) -> None:
    """Validate every tenants/<env>/<name>.yaml; exit 2 naming each file, field and reason on error."""
    if tenants is None:
        tenants = (project or Path()) / "tenants"  # "tenants" from the current directory, as shown
    try:
        tree = load_tenants(tenants)
        if against is not None:
            _check_against(tree, against)
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
        files = [{"environment": f.environment, "name": f.name, "file": str(f.path)} for f in tree.files]
        typer.echo(json.dumps({"valid": True, "tenants": files}, indent=2))
    else:
        typer.echo(f"{len(tree.files)} tenant file(s) valid in {tenants}")


def _check_against(tree: TenantTree, revision: str) -> None:
    # Imported here: only --against reads git history and the platform config (start-up, issue #11).
    from tenancy.spec.changes import refused_change_issues
    from tenancy.spec.history import expandable_storage_classes, platform_storage_classes, specs_at_revision

    previous = specs_at_revision(tree, revision)
    storage_classes = platform_storage_classes(tree, revision)
    expandable = expandable_storage_classes(tree)
    issues = []
    for tenant_file in tree.files:
        before = previous.get((tenant_file.environment, tenant_file.spec.name))
        if before is not None:
            old = resolve(before, tenant_file.environment)
            then, now = storage_classes.get(tenant_file.environment, (None, None))
            issues += refused_change_issues(
                old,
                tenant_file.tenant,
                file=str(tenant_file.path),
                default_class_before=then,
                default_class_after=now,
                expandable_classes=expandable.get(tenant_file.environment, frozenset()),
            )
    if issues:
        raise SpecError(issues)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
