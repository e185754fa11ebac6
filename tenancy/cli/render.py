"""``tenantctl render``: write what a stack would apply, without a cluster, a backend or the Pulumi CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tenancy.cli import exit_codes
from tenancy.render.batch import default_jobs, render_stacks
from tenancy.render.write import RenderError, example_stacks, remove_stale_stacks
from tenancy.spec.errors import SpecError

StackOption = Annotated[
    str | None,
    typer.Option("--stack", help="One stack: the platform ('dev', 'prod') or a tenant ('prod.acme')."),
]
AllOption = Annotated[bool, typer.Option("--all", help="Both platform stacks and every tenant stack.")]
OutOption = Annotated[Path, typer.Option("--out", help="Directory to write OUT/<stack>/ into.")]
ProjectOption = Annotated[
    Path,
    typer.Option(
        "--project", help="The Pulumi project directory (holding Pulumi.yaml).", envvar="TENANCY_PROJECT_DIR"
    ),
]
ValidateOption = Annotated[
    bool,
    typer.Option(
        "--validate", help="Also check every built-in object against the Kubernetes schema (strict)."
    ),
]
JobsOption = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        min=1,
        help="Stacks rendered at once, each in a worker process (default: the CPUs available, at most 8); "
        "1 renders them one after another in this process. The output is the same.",
    ),
]


def render(
    stack: StackOption = None,
    all_stacks: AllOption = False,
    out: OutOption = Path("render"),
    project: ProjectOption = Path("."),
    validate: ValidateOption = False,
    jobs: JobsOption = None,
) -> None:
    """Render stacks to OUT/<stack>/ (manifests/, helm/, outputs.yaml, resources.yaml), secrets masked."""
    if (stack is None) == (not all_stacks):
        typer.echo("error: give either --stack <stack> or --all", err=True)
        raise typer.Exit(exit_codes.INVALID_INPUT)
    if not (project / "Pulumi.yaml").is_file():
        typer.echo(f"error: {project} has no Pulumi.yaml; run from the project or pass --project", err=True)
        raise typer.Exit(exit_codes.INVALID_INPUT)
    try:
        stacks = example_stacks(project) if all_stacks else [str(stack)]
        renders = []
        for rendered in render_stacks(
            stacks,
            project_dir=project,
            out=out,
            jobs=default_jobs() if jobs is None else jobs,
            validate=validate,
        ):
            renders.append(rendered)
            for warning in rendered.warnings:
                typer.echo(f"warning: {rendered.directory / warning}", err=True)
            typer.echo(
                f"{rendered.stack}: {rendered.manifest_count} manifest(s), "
                f"{rendered.release_count} Helm release(s) -> {rendered.directory}"
            )
        if all_stacks:
            for directory in remove_stale_stacks(out, stacks):
                typer.echo(
                    f"removed {directory}: {directory.name} is no longer a stack (its tenant file is gone)"
                )
    except SpecError as error:
        for issue in error.issues:
            typer.echo(f"error: {issue}", err=True)
        raise typer.Exit(exit_codes.INVALID_INPUT) from None
    except RenderError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(exit_codes.INVALID_INPUT) from None
    except KeyboardInterrupt:
        # Each stack's directory is replaced file by file: the one being written may be partial.
        typer.echo(
            f"interrupted: {out} may hold this render's stacks beside older ones, the last one written "
            "partly; render again before reading it",
            err=True,
        )
        raise typer.Exit(exit_codes.INTERRUPTED) from None
    if validate:
        problems = [(r.directory, p) for r in renders for p in r.problems]
        for directory, problem in problems:
            typer.echo(f"error: {directory / problem.file}: {problem.subject}: {problem.error}", err=True)
        if problems:
            typer.echo(f"{len(problems)} object(s) do not match the Kubernetes schema", err=True)
            raise typer.Exit(exit_codes.OPERATION_FAILED)
        typer.echo("every built-in object matches the Kubernetes schema")


def register(app: typer.Typer) -> None:
    app.command("render")(render)
