"""``tenantctl serve`` (the self-service HTTP service, embedded default) and ``tenantctl dev-token``
(a token from the local issuer, for trying the service on a laptop).

Embedded default: SQLite and a local git repository of tenants under ``--state-dir`` (default
``.tenancy``), worker threads running operations, served by one uvicorn process, or by several
sharing that state directory (``--processes``; ``tenancy.service.core.processes``).
Everything else is ``TENANCY_SERVICE_*`` / ``TENANCY_*`` settings (see
tenancy/service/core/config.py and the README).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import shlex
import shutil
import signal
import socket
import sqlite3
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


# The supervisor's pid, for the processes it starts: their shares are claimed under it.
SUPERVISOR_VARIABLE = "TENANCY_SERVICE_SUPERVISOR"
_PR_SET_PDEATHSIG = 1


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
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            min=1,
            max=64,
            help=(
                "Server processes sharing the socket and the state directory."
                " [env TENANCY_SERVICE_PROCESSES; default 1]"
            ),
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Start the tenant self-service API (embedded default: SQLite, local git repo, worker threads)."""
    import uvicorn

    from tenancy.service.app import create_app
    from tenancy.service.backends import prepare_shared_state
    from tenancy.service.core.processes import default_processes
    from tenancy.service.core.tenants_repo import RepositoryError

    overrides = {
        "host": host,
        "port": port,
        "state_dir": state_dir,
        "project_dir": project,
        "repo_dir": repo,
        "workers": workers,
        "processes": processes,
    }
    settings = _settings(**overrides)
    if not (settings.project_dir / "Pulumi.yaml").is_file():
        typer.echo(
            f"error: {settings.project_dir} has no Pulumi.yaml; pass --project <the project dir>", err=True
        )
        raise typer.Exit(exit_codes.INVALID_INPUT)
    busy = _address_in_use(settings.host, settings.port)
    if busy:
        # uvicorn binds only after the app's start-up ran: the reconcile would queue updates and the
        # workers claim them for a service that then fails to listen. Nothing is touched before this.
        typer.echo(f"error: tenantctl serve could not start: {busy}", err=True)
        raise typer.Exit(exit_codes.SERVICE_FAILED)
    count = settings.processes or default_processes()
    seed = settings.project_dir / "tenants"
    seed_tenants = seed if seed.is_dir() else None
    app = None
    try:
        if count == 1:
            app = create_app(settings, seed_tenants=seed_tenants)
        else:  # what the processes share is made once, here, so they never race to make it
            prepare_shared_state(settings, seed_tenants=seed_tenants)
    except (RepositoryError, OSError, sqlite3.DatabaseError) as error:
        # What failed and why (git's own message), never a traceback: the service did not start.
        said = _startup_failure(error, settings.state_dir)
        typer.echo(f"error: tenantctl serve could not start: {said}", err=True)
        raise typer.Exit(exit_codes.SERVICE_FAILED) from None
    where = f"http://{settings.host}:{settings.port}"
    typer.echo(f"tenant API on {where} (OpenAPI at {where}/docs)", err=True)
    typer.echo(f"server processes: {count}", err=True)
    typer.echo(f"tenants repository: {settings.tenants_repo}", err=True)
    typer.echo(f"audit log: {settings.audit_target}", err=True)
    if settings.uses_local_issuer:
        typer.echo(
            f"trusting the LOCAL issuer ({settings.issuer}); get a token with: tenantctl dev-token "
            f"--tenant <name>{_state_dir_argument(settings.state_dir)}",
            err=True,
        )
    if app is not None:
        settle_heap()
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, **UVICORN_OPTIONS)
        return
    # The processes read their settings as this one did: the environment, plus this command's options.
    exported = {
        f"TENANCY_SERVICE_{name.upper()}": str(value)
        for name, value in overrides.items()
        if value is not None
    }
    run_processes(
        settings, count, factory="tenancy.cli.serve:serve_process", environment=exported, log_level=log_level
    )


def run_processes(
    settings: Any, count: int, *, factory: str, environment: dict[str, str], **uvicorn_options: Any
) -> None:
    """Serve ``count`` processes on one socket with uvicorn's supervisor (it restarts a process
    that dies, and stops them all on SIGTERM or Ctrl-C, each as one process stops: requests
    finished, operations handed back). Each runs ``factory`` (an import string) for its app, with
    ``environment`` added to its settings' environment; the benchmark serves its app this way too.

    The processes are forked from this one rather than spawned (uvicorn's default): a spawned
    process imports everything again (2.3 s of CPU here, with no bytecode cache), which a restart
    after a crash waits for, and holds its own copy of every module; a forked one shares this
    process's, frozen out of the collector's sight first (``settle_heap``). This process has
    started no thread, event loop or connection that a child could inherit half-held."""
    import multiprocessing

    import uvicorn
    from uvicorn import _subprocess

    from tenancy.service.core.processes import release_shares

    if isinstance(getattr(_subprocess, "spawn", None), multiprocessing.context.BaseContext):
        _subprocess.spawn = multiprocessing.get_context("fork")  # type: ignore[assignment]
    settle_heap()

    os.environ.update(environment)
    os.environ["TENANCY_SERVICE_PROCESSES"] = str(count)
    os.environ[SUPERVISOR_VARIABLE] = str(os.getpid())
    # Metrics in prometheus_client's multiprocess mode: each process writes its values to files here
    # and /metrics adds them up, whichever process answers the scrape (``core.metrics``). A folder
    # of this supervisor's own: counts restart with the service, as they did with one process.
    metrics = settings.state_dir.resolve() / "metrics" / str(os.getpid())
    shutil.rmtree(metrics, ignore_errors=True)
    metrics.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    try:
        uvicorn.run(
            factory,
            factory=True,
            workers=count,
            host=settings.host,
            port=settings.port,
            **uvicorn_options,
            **UVICORN_OPTIONS,
        )
    finally:
        release_shares(settings.state_dir, str(os.getpid()), count)
        shutil.rmtree(metrics, ignore_errors=True)


def serve_process() -> Any:
    """The app of one of ``tenantctl serve``'s processes (uvicorn calls this in each process)."""
    return process_app()


def process_app(*, engine: Any = None) -> Any:
    """One process's app: its share of the service (``core.processes``), then the app, built from
    the settings its supervisor exported (``engine``: the benchmark's engine double)."""
    from tenancy.service.app import create_app
    from tenancy.service.core.config import ServiceSettings
    from tenancy.service.core.processes import claim_share

    supervisor = int(os.environ[SUPERVISOR_VARIABLE])
    _stop_with(supervisor)
    settings = ServiceSettings()
    share = claim_share(settings.state_dir, str(supervisor), settings.processes or 1)
    app = create_app(settings, engine=engine, share=share)
    settle_heap()
    return app


def _stop_with(supervisor: int) -> None:
    """Ask the kernel for a SIGTERM when the supervisor dies (a ``kill -9`` of it alone), so this
    process shuts down as on ``tenantctl serve``'s own SIGTERM (operations handed back to the queue)
    instead of serving on, unsupervised, on the socket it inherited."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's own SIGTERM still stops us
        return
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _startup_failure(error: Exception, state_dir: Path) -> str:
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror or type(error).__name__}{where}"
    if isinstance(error, sqlite3.DatabaseError):  # SQLite does not say which file: each is tried
        broken = _unreadable_databases(state_dir)
        if not broken:
            return f"a database in {state_dir} could not be read ({error})"
        return "; ".join(
            f"{path} is not a readable SQLite database ({reason}): restore it from a backup, or move it "
            "aside with its -wal and -shm files to start with an empty one (what it held is then lost)"
            for path, reason in broken
        )
    return redact(str(error))


def _unreadable_databases(state_dir: Path) -> list[tuple[Path, str]]:
    """The SQLite files of the state directory that do not open and read as databases."""
    broken = []
    for path in sorted(state_dir.rglob("*.sqlite3")):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as database:
                database.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as error:
            broken.append((path, str(error)))
    return broken


def _address_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (bound the way uvicorn binds it), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            if error.errno == errno.EADDRINUSE:
                return (
                    f"{where} is already in use (another tenantctl serve?); stop it, or choose another "
                    "port with --port or TENANCY_SERVICE_PORT"
                )
            return f"cannot listen on {where}: {error.strerror or type(error).__name__}"
    return None


def _state_dir_argument(state_dir: Path) -> str:
    """`` --state-dir <dir>`` unless ``state_dir`` is where dev-token looks by default (./.tenancy)."""
    if state_dir == Path.cwd() / ".tenancy":
        return ""
    return f" --state-dir {shlex.quote(str(state_dir))}"


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
    from tenancy.service.core.local_issuer import JWKS_FILE, PRIVATE_KEY_FILE, mint_token

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
    from tenancy.spec.tenant import not_a_tenant_name

    for name in tenant or []:
        problem = not_a_tenant_name(name)
        if problem is not None:  # no tenant can have it: the group would grant nothing
            typer.echo(f"error: --tenant {problem}", err=True)
            raise typer.Exit(exit_codes.INVALID_INPUT)
    issuer_dir = settings.local_issuer_dir
    if not ((issuer_dir / PRIVATE_KEY_FILE).is_file() and (issuer_dir / JWKS_FILE).is_file()):
        # A key made here would sign tokens that no running service trusts: each service trusts the
        # key in its own state directory, which `tenantctl serve` makes when it starts.
        typer.echo(
            f"error: no local issuer in {settings.state_dir}: `tenantctl serve` makes it when it starts, "
            "and trusts only its own. Run dev-token in the directory where tenantctl serve runs, or "
            "give it the same --state-dir (TENANCY_SERVICE_STATE_DIR)",
            err=True,
        )
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
