"""``tenantctl policy OUT``: run the platform's policies over a render directory (what CI runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tenancy.cli import exit_codes
from tenancy.policy.model import Violation
from tenancy.policy.rules import RESOURCE_RULES, STACK_RULES, check_stacks
from tenancy.policy.sources import UnreadableRender, objects_from_directory
from tenancy.render.read import stack_directories

OutArgument = Annotated[
    Path, typer.Argument(help="A render directory (tenantctl render --out OUT), or one stack inside it.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable results.")]


def _entry(found: Violation) -> dict[str, Any]:
    return {
        "rule": found.rule,
        "object": found.subject,
        "file": found.origin,
        "field": found.field,
        "problem": found.problem,
        "fix": found.fix,
    }


def policy(out: OutArgument, as_json: JsonOption = False) -> None:
    """Check every rendered stack; exit 3 naming each object, rule and fix on a violation."""
    stacks = stack_directories(out)
    if not stacks:
        typer.echo(
            f"error: no rendered stack in {out}; run 'tenantctl render --all --out {out}' first", err=True
        )
        raise typer.Exit(exit_codes.INVALID_INPUT)
    try:
        objects = objects_from_directory(out)
    except UnreadableRender as error:
        if as_json:
            typer.echo(json.dumps({"error": {"code": "invalid_input", "message": str(error)}}, indent=2))
        else:
            typer.echo(f"error: {error}; render it again (tenantctl render --out {out})", err=True)
        raise typer.Exit(exit_codes.INVALID_INPUT) from None
    found = check_stacks(objects)
    violations = [v for v in found if not v.undecided]
    # Findings about masked (secret) values: the render cannot show whether they hold.
    undecided = [v for v in found if v.undecided]
    rules = len(RESOURCE_RULES) + len(STACK_RULES)
    if as_json:
        document = {
            "passed": not violations,
            "stacks": [s.name for s in stacks],
            "rules": [r.name for r in RESOURCE_RULES] + [r.name for r in STACK_RULES],
            "violations": [_entry(v) for v in violations],
            "undecided": [_entry(v) for v in undecided],
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        for violation in violations:
            typer.echo(f"{violation.origin}: {violation.message}", err=True)
        for unknown in undecided:
            typer.echo(
                f"warning: {unknown.origin}: cannot check a masked secret value: {unknown.message}", err=True
            )
    if violations:
        if not as_json:
            broken = len({v.rule for v in violations})
            typer.echo(f"{len(violations)} violation(s) of {broken} of {rules} policies in {out}", err=True)
        raise typer.Exit(exit_codes.OPERATION_FAILED)
    if not as_json:
        typer.echo(f"{len(objects)} object(s) in {len(stacks)} stack(s) pass all {rules} policies")


def register(app: typer.Typer) -> None:
    app.command("policy")(policy)
