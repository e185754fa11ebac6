"""``tenantctl serve`` (the self-service HTTP service, embedded default) and ``tenantctl dev-token``
(a token from the local issuer, for trying the service on a laptop).

Embedded default: one process, SQLite and a local git repository of tenants under ``--state-dir``
(default ``.tenancy``), worker threads running operations. Everything else is
``TENANCY_SERVICE_*`` / ``TENANCY_*`` settings (see tenancy/service/core/config.py and the README).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from tenancy.cli import exit_codes
from tenancy.redaction import redact

# How uvicorn serves the API, here and in benchmarks/bench_service.py (its bare reference endpoint too,
# so the ratio it prints compares like with like): uvloop's event loop and httptools' HTTP/1.1 parser,
# both C and pinned, instead of asyncio's pure-Python selector loop and h11 (about a third of a GET's
# CPU was the loop and h11). Named rather than "auto", so a missing one fails at start-up instead of
# serving slower unnoticed. proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from
# FORWARDED_ALLOW_IPS; the service reads it itself, from TENANCY_SERVICE_TRUSTED_PROXIES only
# (core.client_address).
UVICORN_OPTIONS: dict[str, Any] = {"loop": "uvloop", "http": "httptools", "proxy_headers": False}


def settle_heap() -> None:
    """Once the app is built, before serving: move everything start-up made (modules, the app, its
    caches: about 150,000 objects that live as long as the process) out of the cyclic garbage
    collector's sight, as Instagram does with ``gc.freeze``. Each full collection walked all of them
    holding the GIL, about 100 ms of CPU here during which no request thread ran; it now walks only
    what requests made. Not collected first (that would cost a full collection at every start): the
    little garbage start-up left in cycles stays, once."""
    gc.freeze()


StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help=(
            "Queue, API keys, audit log, local issuer, tenants repo."
            " [env TENANCY_SERVICE_STATE_DIR; default .tenancy]"
        ),
    ),
]


def _settings(**overrides: Any) -> Any:
    from tenancy.service.core.config import ServiceSettings

    try:
        return ServiceSettings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"]) or "settings"
            typer.echo(f"error: TENANCY_SERVICE_{field.upper()}: {problem['msg']}", err=True)
        raise typer.Exit(exit_codes.INVALID_INPUT) from None


def serve(
    host: Annotated[str | None, typer.Option("--host", help="Listen address. [default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Listen port. [default 8080]")] = None,
    state_dir: StateDirOption = None,
    project: Annotated[
        Path | None, typer.Option("--project", help="The Pulumi project (Pulumi.yaml). [default .]")
    ] = None,
    repo: Annotated[
        Path | None,
        typer.Option(
            "--repo", help="The tenants git repository. [default <state-dir>/tenants-repo, created]"
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Worker threads (0: API only). [default TENANCY_MAX_PARALLEL]"),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Start the tenant self-service API (embedded default: SQLite, local git repo, worker threads)."""
    import uvicorn

    from tenancy.service.app import create_app
    from tenancy.service.core.tenants_repo import RepositoryError

    settings = _settings(
        host=host, port=port, state_dir=state_dir, project_dir=project, repo_dir=repo, workers=workers
    )
    if not (settings.project_dir / "Pulumi.yaml").is_file():
        typer.echo(
            f"error: {settings.project_dir} has no Pulumi.yaml; pass --project <the project dir>", err=True
        )
        raise typer.Exit(exit_codes.INVALID_INPUT)
    seed = settings.project_dir / "tenants"
    try:
        app = create_app(settings, seed_tenants=seed if seed.is_dir() else None)
    except (RepositoryError, OSError) as error:
        # What failed and why (git's own message), never a traceback: the service did not start.
        typer.echo(f"error: tenantctl serve could not start: {_startup_failure(error)}", err=True)
        raise typer.Exit(exit_codes.SERVICE_FAILED) from None
    where = f"http://{settings.host}:{settings.port}"
    typer.echo(f"tenant API on {where} (OpenAPI at {where}/docs)", err=True)
    typer.echo(f"tenants repository: {settings.tenants_repo}", err=True)
    typer.echo(f"audit log: {settings.audit_target}", err=True)
    if settings.uses_local_issuer:
        typer.echo(
            f"trusting the LOCAL issuer ({settings.issuer}); "
            "get a token with: tenantctl dev-token --tenant <name>",
            err=True,
        )
    settle_heap()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, **UVICORN_OPTIONS)


def _startup_failure(error: Exception) -> str:
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror or type(error).__name__}{where}"
    return redact(str(error))


def dev_token(
    tenant: Annotated[
        list[str] | None,
        typer.Option("--tenant", help="A tenant to grant the role on (repeatable)."),
    ] = None,
    role: Annotated[str, typer.Option("--role", help="admin or viewer, on every --tenant.")] = "admin",
    platform_admin: Annotated[
        bool, typer.Option("--platform-admin", help="Grant platform-admin (every tenant).")
    ] = False,
    subject: Annotated[
        str | None, typer.Option("--subject", help="The token's sub. [default: $USER]")
    ] = None,
    email: Annotated[str | None, typer.Option("--email", help="The token's email (the git author).")] = None,
    minutes: Annotated[int, typer.Option("--minutes", min=1, max=1440, help="Lifetime.")] = 60,
    state_dir: StateDirOption = None,
) -> None:
    """Print a token from the local issuer, shaped like the platform realm's (for local use only)."""
    from tenancy.service.core.local_issuer import mint_token

    settings = _settings(state_dir=state_dir)
    if not settings.uses_local_issuer:
        typer.echo(
            "error: the service is configured to trust "
            f"{settings.jwks_url or settings.jwks_file}, not the local issuer; get a token from Keycloak",
            err=True,
        )
        raise typer.Exit(exit_codes.INVALID_INPUT)
    if role not in ("admin", "viewer"):
        typer.echo("error: --role is admin or viewer", err=True)
        raise typer.Exit(exit_codes.INVALID_INPUT)
    if not tenant and not platform_admin:
        typer.echo("error: name at least one --tenant, or pass --platform-admin", err=True)
        raise typer.Exit(exit_codes.INVALID_INPUT)
    groups = [f"/tenants/{name}/{role}s" for name in tenant or []]
    who = subject or os.environ.get("USER") or "developer"
    token = mint_token(
        settings.local_issuer_dir,
        issuer=settings.issuer,
        audience=settings.audience,
        subject=who,
        groups=groups,
        roles=["platform-admin"] if platform_admin else [],
        email=email,
        lifetime_seconds=minutes * 60,
    )
    typer.echo(token)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("dev-token")(dev_token)
