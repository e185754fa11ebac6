"""``tenantctl preview|up|refresh|destroy|sync|outputs|stacks``: run tenant stacks.

Every command goes through the automation layer: the request is queued (so a CLI run and the HTTP
service never update one stack at the same time), a worker runs it through the Pulumi engine, and the
outcome is recorded in the operation history (``.tenancy/operations.sqlite3`` by default; the
service's Redis queue with ``TENANCY_SERVICE_BACKEND=redis``, where the CLI's operations coalesce with
the service's and the service's workers may run them while the CLI follows).

Output: live progress on stderr (a bar per running tenant in a terminal; plain lines when stderr is
not a terminal or CI=true), results on stdout, ``--json`` for machines. Exit codes: 0 ok, 2 invalid
input, 3 an operation failed, 4 the Pulumi CLI is missing or too old.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TextIO

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from tenancy.automation.contract import (
    Engine,
    EngineInventory,
    Operation,
    OperationKind,
    OperationStatus,
    ProgressEvent,
    StackRef,
)
from tenancy.automation.errors import AutomationError, PulumiCliMissing, StackNotFound
from tenancy.automation.incarnation import checkout_incarnations
from tenancy.automation.progress import QUIET_OPS, describe_event, describe_outcome
from tenancy.automation.settings import AutomationSettings
from tenancy.automation.storage import OpenQueue, StoredQueue
from tenancy.automation.sync import SyncAction, SyncPlan, plan_sync, submit_plan
from tenancy.automation.worker import LOCK_WAIT_SECONDS, Worker, WorkerListener
from tenancy.cli import exit_codes
from tenancy.cli.options import (
    EnvOption,
    JsonOption,
    ParallelOption,
    ProjectOption,
    StateOption,
    TenantArgument,
    TenantsOption,
)
from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.tenant import TenantSpec, not_a_tenant_name
from tenancy.spec.tree import ENVIRONMENTS, load_tenants, read_tenant_file

if TYPE_CHECKING:
    from tenancy.automation.data_operations import TenantData
    from tenancy.automation.scaling import QdrantScaling

# Replaced in tests by a function returning an engine double.
EngineFactory = Callable[[AutomationSettings], Engine]


def make_engine(settings: AutomationSettings) -> Engine:
    """The Pulumi engine, after checking the Pulumi CLI is there and new enough."""
    from tenancy.automation.pulumi_engine import PulumiEngine  # imports pulumi.automation: only when needed

    engine = PulumiEngine(settings)
    engine.check_cli()
    return engine


def make_scaling(settings: AutomationSettings, engine: Engine) -> QdrantScaling | None:
    """What drains, rebalances and grows Qdrant around an update (replaced in tests)."""
    from tenancy.automation.scaling import default_scaling

    return default_scaling(engine, settings.project_dir)


def make_tenant_data(engine: Engine | None) -> TenantData | None:
    """Tenants' Qdrant (their stack outputs through ``engine``) and the platform's backup bucket
    (``TENANCY_SERVICE_BACKUP_*``, as the service reads it), for backups, restores and the automatic
    backup before a destroy; None when no bucket is configured (replaced in tests)."""
    from tenancy.automation.data_operations import BackupStore

    return BackupStore().tenant_data(engine)


# --- the commands -----------------------------------------------------------------------------------


def preview(
    tenant: TenantArgument,
    env: EnvOption,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    tenants: TenantsOption = None,
    state_dir: StateOption = None,
) -> None:
    """Show what `up` would change for one tenant, without changing anything.

    The tenant file is validated first; nothing runs if it is invalid (exit 2).

    Example:  tenantctl preview acme --env dev

    Exit codes: 0 ok, 2 invalid input, 3 the operation failed,
    4 the Pulumi CLI is missing or too old.
    """
    _run_one(OperationKind.preview, tenant, env, as_json, _settings(project, tenants, state_dir))


# The platform team's override of a failing automatic backup (run here, with the platform's state
# and bucket, you are the platform; the service's routes take it from platform-admins only).
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Go on without the automatic backup (before a destroy, a Qdrant version change or its removal) "
        "if it fails; recorded in the operation's events.",
    ),
]


# Taking over a stack left locked by an update that no longer runs (the worker never does it on its own
# for a lock its queue did not leave: code locked_elsewhere).
RecoverOption = Annotated[
    bool,
    typer.Option(
        "--recover",
        help="First cancel the stack's lock and drop its pending operations: only once you know the update "
        "that left them is dead (a killed deploy, a crashed pulumi up), never while one runs.",
    ),
]


def up(
    tenant: TenantArgument,
    env: EnvOption,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    tenants: TenantsOption = None,
    state_dir: StateOption = None,
    force: ForceOption = False,
) -> None:
    """Create or update one tenant's stack <env>.<tenant> from its file.

    Applies tenants/<env>/<tenant>.yaml. The file is validated first;
    nothing runs if it is invalid (exit 2). Prints the changes and the
    stack outputs, secrets masked (see `tenantctl outputs --show-secrets`).

    An update that changes the Qdrant version or turns it off backs it up
    first and stops if that backup fails (exit 3, code backup_failed);
    --force goes on without it, saying so in the operation's events.

    Example:  tenantctl up acme --env prod

    Exit codes: 0 ok, 2 invalid input, 3 the operation failed,
    4 the Pulumi CLI is missing or too old.
    """
    params = {"force": True} if force else None
    _run_one(OperationKind.up, tenant, env, as_json, _settings(project, tenants, state_dir), params=params)


def refresh(
    tenant: TenantArgument,
    env: EnvOption,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    tenants: TenantsOption = None,
    state_dir: StateOption = None,
    recover: RecoverOption = False,
) -> None:
    """Read one tenant's resources back from the cluster (drift check).

    Updates the stack's state to what really exists; changes nothing in
    the cluster.

    A stack whose lock or pending operations were left by an update this
    queue did not run makes every operation wait for it, then fail (code
    locked_elsewhere) rather than cancel what may be a live update. Once
    you know that update is dead, --recover cancels the lock and drops the
    pending operations before the refresh.

    Example:  tenantctl refresh acme --env dev [--recover]

    Exit codes: 0 ok, 2 invalid input, 3 the operation failed,
    4 the Pulumi CLI is missing or too old.
    """
    # The refresh itself asks for the recovery (its params): nothing is left behind to recover some
    # later lock if this one never runs.
    params = {"recover": True} if recover else None
    _run_one(
        OperationKind.refresh, tenant, env, as_json, _settings(project, tenants, state_dir), params=params
    )


def destroy(
    tenant: TenantArgument,
    env: EnvOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    tenants: TenantsOption = None,
    state_dir: StateOption = None,
    force: ForceOption = False,
) -> None:
    """Delete every resource of one tenant and remove its stack.

    Refused while the tenant's deletion protection is on (the default):
    set deletionProtection: false in its file, run `tenantctl up`, then
    destroy. Asks for confirmation unless --yes.

    Example:  tenantctl destroy initech --env dev --yes

    Exit codes: 0 ok, 2 invalid input, 3 the operation failed,
    4 the Pulumi CLI is missing or too old.
    """
    settings = _settings(project, tenants, state_dir)
    stack = _stack(env, tenant, as_json)
    if not yes:
        if not sys.stdin.isatty():
            _fail(
                "destroy deletes the tenant's data: pass --yes to confirm", exit_codes.INVALID_INPUT, as_json
            )
        typer.confirm(f"Destroy every resource of tenant {tenant} in {env} and remove its stack?", abort=True)
    engine = _engine(settings, as_json)
    try:
        protected = engine.outputs(stack).get("deletionProtection")
    except StackNotFound:
        _fail(f"stack {stack.name} does not exist: nothing to destroy", exit_codes.INVALID_INPUT, as_json)
    except AutomationError as error:
        _fail(f"cannot read stack {stack.name}: {error.message}", exit_codes.OPERATION_FAILED, as_json)
    if protected is True:
        _fail(
            f"tenant {tenant} in {env} has deletion protection on: set deletionProtection: false in "
            f"tenants/{env}/{tenant}.yaml, run `tenantctl up {tenant} --env {env}`, then destroy",
            exit_codes.INVALID_INPUT,
            as_json,
        )
    params = {"force": True} if force else None
    _run_one(OperationKind.destroy, tenant, env, as_json, settings, engine=engine, params=params)


def sync(
    env: EnvOption,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Destroy stacks whose tenant file was removed (only if deletion protection is off).",
        ),
    ] = False,
    everything: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Update every tenant, changed or not (after a change to the program, plans or versions).",
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; change nothing.")] = False,
    parallel: ParallelOption = None,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    tenants: TenantsOption = None,
    state_dir: StateOption = None,
) -> None:
    """Bring every tenant stack of an environment in line with tenants/<env>/.

    Creates stacks for new tenant files and updates tenants whose file
    changed since their last successful update: several tenants at once
    (--parallel), never two operations on one stack. After a change to the
    program, plans or versions, use --all to update every tenant.

    A stack whose file was removed is destroyed only with --prune, and only
    when its deletion protection is off; skipped stacks are listed with the
    reason. The whole tenants/ tree is validated first: if any file is
    invalid, nothing runs (exit 2).

    Examples:  tenantctl sync --env dev
               tenantctl sync --env prod --prune --dry-run

    Exit codes: 0 ok, 2 invalid input, 3 the operation failed,
    4 the Pulumi CLI is missing or too old.
    """
    settings = _settings(project, tenants, state_dir, parallel=parallel)
    _check_environment(env, as_json)
    try:
        tree = load_tenants(settings.tenants_dir)
    except SpecError as error:
        _spec_failure(error, as_json)
    specs = {file.spec.name: file.spec.to_document() for file in tree.environment(env)}
    engine = _engine(settings, as_json)
    with _open_queue(settings, as_json) as opened:
        queue = opened.queue
        try:
            plan = plan_sync(env, specs, history=queue, engine=engine, prune=prune, everything=everything)
        except AutomationError as error:
            _fail(
                f"cannot read the current state of {env}: {error.message}",
                exit_codes.OPERATION_FAILED,
                as_json,
            )
        if dry_run:
            _report_sync(plan, [], as_json=as_json, dry_run=True)
            return
        incarnations = checkout_incarnations(
            settings.tenants_dir, env, (item.stack.tenant for item in plan.to_run)
        )
        operations = submit_plan(plan, queue, requested_by=_requester(), incarnations=incarnations)
        finished = _run(
            queue,
            engine,
            operations,
            max_parallel=settings.max_parallel,
            as_json=as_json,
            scaling=make_scaling(settings, engine),
            data=make_tenant_data(engine),
            lock_wait_seconds=settings.lock_wait_seconds,
        )
    _report_sync(plan, finished, as_json=as_json, dry_run=False)
    if any(op.status is OperationStatus.failed for op in finished):
        raise typer.Exit(exit_codes.OPERATION_FAILED)


def outputs(
    tenant: TenantArgument,
    env: EnvOption,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Print secret values (API keys, kubeconfig) in clear.")
    ] = False,
    key: Annotated[
        str | None, typer.Option("--key", help="Print only this output's value, raw (for scripts).")
    ] = None,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    tenants: TenantsOption = None,
    state_dir: StateOption = None,
) -> None:
    r"""Print one tenant's stack outputs; secret values are masked.

    Outputs name the tenant's endpoints, API keys and kubeconfig. Secret
    values print as \[secret] unless --show-secrets.

    Examples:  tenantctl outputs acme --env dev
               tenantctl outputs acme --env dev --show-secrets \
                 --key vclusterKubeconfig > kubeconfig
    """
    settings = _settings(project, tenants, state_dir)
    stack = _stack(env, tenant, as_json)
    engine = _engine(settings, as_json)
    try:
        values = engine.outputs(stack, reveal_secrets=show_secrets)
    except StackNotFound as error:
        _fail(error.message, exit_codes.INVALID_INPUT, as_json)
    except AutomationError as error:
        _fail(error.message, exit_codes.OPERATION_FAILED, as_json)
    if key is not None:
        if key not in values:
            _fail(
                f"stack {stack.name} has no output {key!r}; it has: {', '.join(sorted(values))}",
                exit_codes.INVALID_INPUT,
                as_json,
            )
        values = {key: values[key]}
        if not as_json:
            value = values[key]
            typer.echo(value if isinstance(value, str) else json.dumps(value))
            return
    if as_json:
        _print_json({"stack": stack.name, "outputs": values, "secretsShown": show_secrets})
        return
    for name in sorted(values):
        typer.echo(f"{name}: {_display_value(values[name])}")
    if not show_secrets and any(v == "[secret]" for v in values.values()):
        typer.echo("(secret values are masked; pass --show-secrets to print them)", err=True)


def stacks(
    env: Annotated[
        str | None, typer.Option("--env", "-e", help="Only this environment.", envvar="TENANCY_ENV")
    ] = None,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    tenants: TenantsOption = None,
    state_dir: StateOption = None,
) -> None:
    """List every tenant stack with its last operation.

    Stacks come from the backend and from the local operation history;
    without the Pulumi CLI, only the history is listed (with a warning).

    Example:  tenantctl stacks --env prod
    """
    settings = _settings(project, tenants, state_dir)
    if env is not None:
        _check_environment(env, as_json)
    with _open_queue(settings, as_json) as opened:
        rows, warning = _stack_rows(opened.queue, settings, env)
    if as_json:
        _print_json({"stacks": rows, "warning": warning})
        return
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    _print_stacks(rows)


def _stack_rows(
    queue: StoredQueue, settings: AutomationSettings, env: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Every stack the backend or the history knows, with its last operation; and a warning when the
    backend could not be asked."""
    known = {stack.name: stack for stack in queue.stacks(env)}
    in_backend: set[str] | None = None
    warning = None
    try:
        engine = _factory()(settings)
        if isinstance(engine, EngineInventory):
            backend = engine.stacks(env)
            in_backend = {stack.name for stack in backend}
            known.update({stack.name: stack for stack in backend})
    except AutomationError as error:
        warning = f"listing the local operation history only: {error.message}"
    rows: list[dict[str, Any]] = []
    for name in sorted(known):
        stack = known[name]
        last = queue.last(stack)
        rows.append(
            {
                "stack": name,
                "environment": stack.environment,
                "tenant": stack.tenant,
                "inBackend": None if in_backend is None else name in in_backend,
                "lastOperation": None if last is None else operation_document(last),
            }
        )
    return rows, warning


def _print_stacks(rows: list[dict[str, Any]]) -> None:
    if not rows:
        typer.echo("no tenant stacks yet")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("STACK", "IN BACKEND", "LAST OPERATION", "STATUS", "WHEN (UTC)", "BY", "NOTE"):
        table.add_column(column)
    for row in rows:
        last_doc = row["lastOperation"]
        backend_cell = {None: "?", True: "yes", False: "no"}[row["inBackend"]]
        if last_doc is None:
            table.add_row(row["stack"], backend_cell, "-", "-", "-", "-", "")
            continue
        summary = last_doc["summary"] or {}
        table.add_row(
            row["stack"],
            backend_cell,
            f"{last_doc['kind']} {last_doc['id'][:8]}",
            last_doc["status"],
            (last_doc["finishedAt"] or last_doc["createdAt"])[:16].replace("T", " "),
            last_doc["requestedBy"],
            (summary.get("error") or "")[:80],
        )
    Console(width=200).print(table)


def register(app: typer.Typer) -> None:
    app.command("preview")(preview)
    app.command("up")(up)
    app.command("refresh")(refresh)
    app.command("destroy")(destroy)
    app.command("sync")(sync)
    app.command("outputs")(outputs)
    app.command("stacks")(stacks)


# --- running operations --------------------------------------------------------------------------------


def _run_one(
    kind: OperationKind,
    tenant: str,
    env: str,
    as_json: bool,
    settings: AutomationSettings,
    *,
    engine: Engine | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    stack = _stack(env, tenant, as_json)
    # up/preview apply the file; refresh passes it along when present (not needed by Pulumi, but the
    # operation then records what the tenant looked like); destroy needs none.
    has_file = (settings.tenants_dir / env / f"{tenant}.yaml").is_file()
    needs_spec = kind in (OperationKind.preview, OperationKind.up)
    spec = (
        _read_spec(settings, stack, as_json)
        if needs_spec or (kind is OperationKind.refresh and has_file)
        else None
    )
    engine = engine or _engine(settings, as_json)
    with _open_queue(settings, as_json) as opened:
        queue = opened.queue
        incarnation = checkout_incarnations(settings.tenants_dir, env, [tenant])[tenant]
        operation = queue.submit(
            stack, kind, spec=spec, requested_by=_requester(), incarnation=incarnation, params=params
        )
        finished = _run(
            queue,
            engine,
            [operation],
            max_parallel=1,
            as_json=as_json,
            scaling=make_scaling(settings, engine),
            data=make_tenant_data(engine),
            lock_wait_seconds=settings.lock_wait_seconds,
        )
        outcome = next((op for op in finished if op.id == operation.id), None) or queue.get(operation.id)
        assert outcome is not None
        resources = _changed_resources(queue, outcome)
    if as_json:
        _print_json({"operation": operation_document(outcome), "resources": resources})
    else:
        typer.echo(describe_outcome(outcome))
        if outcome.status is OperationStatus.succeeded and outcome.summary and outcome.summary.outputs:
            for name in sorted(outcome.summary.outputs):
                typer.echo(f"  {name}: {_display_value(outcome.summary.outputs[name])}")
    if outcome.status is not OperationStatus.succeeded:
        raise typer.Exit(exit_codes.OPERATION_FAILED)


def _run(
    queue: StoredQueue,
    engine: Engine,
    operations: Sequence[Operation],
    *,
    max_parallel: int,
    as_json: bool,
    scaling: QdrantScaling | None = None,
    data: TenantData | None = None,
    lock_wait_seconds: float = LOCK_WAIT_SECONDS,
) -> list[Operation]:
    """Run ``operations`` (and anything queued ahead of them on their stacks) with live progress."""
    if not operations:
        return []
    ids = {operation.id for operation in operations}
    with _progress(len(operations), quiet=as_json) as listener:
        started_here: set[str] = set()
        worker = Worker(
            queue,
            engine,
            max_parallel=max_parallel,
            listener=_Noting(listener, started_here),
            scaling=scaling,
            data=data,
            lock_wait_seconds=lock_wait_seconds,
        )
        follower = OperationFollower(
            queue, ids, listener, ours=lambda: started_here | {op.id for op in worker.running}
        )
        following = threading.Thread(target=follower.run, name="tenancy-follow", daemon=True)
        following.start()
        try:
            ran_here = {op.id for op in worker.run_until_idle(only=ids)}
        except KeyboardInterrupt:
            abandoned = worker.abandon(
                "interrupted (Ctrl-C) while running; the stack is recovered before its next operation"
            )
            typer.echo(f"interrupted: {len(abandoned)} operation(s) stopped", err=True)
            raise typer.Exit(exit_codes.INTERRUPTED) from None
        finally:
            follower.stop()
            following.join(5)
        follower.poll(skip=ran_here)  # the last events of operations another process finished
        outcomes = [queue.get(operation_id) for operation_id in ids]
        for outcome in outcomes:
            # On a shared queue the service's workers may have run some of ours: report them too.
            if outcome is not None and outcome.id not in ran_here:
                listener.operation_finished(outcome)
    order = {operation.id: index for index, operation in enumerate(operations)}
    return sorted((op for op in outcomes if op is not None), key=lambda op: order[op.id])


class _Noting(WorkerListener):
    """Passes everything on to ``listener`` and notes which operations this process started."""

    def __init__(self, listener: WorkerListener, started: set[str]) -> None:
        self._listener, self._started = listener, started

    def operation_started(self, operation: Operation) -> None:
        self._started.add(operation.id)
        self._listener.operation_started(operation)

    def event(self, operation: Operation, event: ProgressEvent) -> None:
        self._listener.event(operation, event)

    def operation_finished(self, operation: Operation) -> None:
        self._listener.operation_finished(operation)


class OperationFollower:
    """Shows the progress of our operations that another process runs (on a shared queue, the
    service's workers may claim them first): their start and events go to the same listener."""

    def __init__(
        self,
        queue: StoredQueue,
        ids: set[str],
        listener: WorkerListener,
        *,
        ours: Callable[[], set[str]],
        interval: float = 0.5,
    ) -> None:
        self._queue, self._ids, self._listener, self._ours = queue, set(ids), listener, ours
        self._interval = interval
        self._seen: dict[str, int] = {}
        self._mine: set[str] = set()
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.poll()
            except Exception:  # showing progress must never break the run
                return

    def stop(self) -> None:
        self._stopping.set()

    def poll(self, *, skip: Collection[str] = ()) -> None:
        self._mine |= self._ours() | set(skip)
        for operation_id in sorted(self._ids - self._mine):
            operation = self._queue.get(operation_id)
            if operation is None or operation.status in (OperationStatus.queued, OperationStatus.superseded):
                continue
            if operation_id not in self._seen:
                self._seen[operation_id] = 0
                self._listener.operation_started(operation)
            for event in self._queue.events(operation_id, after_seq=self._seen[operation_id]):
                self._seen[operation_id] = event.seq
                self._listener.event(operation, event)


@contextmanager
def _progress(total: int, *, quiet: bool) -> Iterator[WorkerListener]:
    if quiet:
        yield WorkerListener()
    elif sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("true", "1"):
        live = LiveProgress(total)
        with live.progress:
            yield live
    else:
        yield PlainProgress(sys.stderr)


class PlainProgress(WorkerListener):
    """One line per finished step, prefixed by the stack: for CI logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def _line(self, operation: Operation, text: str) -> None:
        with self._lock:
            self._stream.write(f"[{operation.stack.name}] {text}\n")
            self._stream.flush()

    def operation_started(self, operation: Operation) -> None:
        self._line(operation, f"{operation.kind.value} started (operation {operation.id[:8]})")

    def event(self, operation: Operation, event: ProgressEvent) -> None:
        if event.kind == "summary":
            return  # operation_finished says it
        if event.kind == "resource" and (event.op in QUIET_OPS or event.status == "started"):
            return
        self._line(operation, describe_event(event))

    def operation_finished(self, operation: Operation) -> None:
        self._line(operation, describe_outcome(operation))


class LiveProgress(WorkerListener):
    """A progress bar per running tenant plus one for the whole run; finished tenants become lines."""

    def __init__(self, total: int) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[stack]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}", style="dim"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._overall = self.progress.add_task("operations finished", total=total, stack="all")
        self._tasks: dict[str, TaskID] = {}
        self._steps: dict[str, int] = {}
        self._lock = threading.Lock()

    def operation_started(self, operation: Operation) -> None:
        with self._lock:
            self._tasks[operation.id] = self.progress.add_task(
                f"{operation.kind.value} starting", total=None, stack=operation.stack.name
            )
            self._steps[operation.id] = 0

    def event(self, operation: Operation, event: ProgressEvent) -> None:
        with self._lock:
            task = self._tasks.get(operation.id)
            if task is None:
                return
            if event.kind == "resource" and event.status == "started":
                self._steps[operation.id] += 1
                self.progress.update(task, total=self._steps[operation.id] + 1)
            elif event.kind == "resource" and event.status in ("done", "failed"):
                self.progress.advance(task)
            if event.kind != "summary":
                self.progress.update(task, description=describe_event(event)[:48])
            if event.kind == "diagnostic" and event.status in ("error", "warning"):
                self.progress.console.print(f"[{operation.stack.name}] {describe_event(event)}")

    def operation_finished(self, operation: Operation) -> None:
        with self._lock:
            task = self._tasks.pop(operation.id, None)
            if task is not None:
                self.progress.remove_task(task)
            self.progress.advance(self._overall)
        mark = "[green]✓[/]" if operation.status is OperationStatus.succeeded else "[red]✗[/]"
        self.progress.console.print(f"{mark} {describe_outcome(operation)}", highlight=False, markup=True)


# --- reporting --------------------------------------------------------------------------------------


def operation_document(operation: Operation) -> dict[str, Any]:
    """An operation as JSON (camelCase keys, UTC ISO-8601 times, secrets already masked)."""
    summary = operation.summary
    return {
        "id": operation.id,
        "stack": operation.stack.name,
        "environment": operation.stack.environment,
        "tenant": operation.stack.tenant,
        "kind": operation.kind.value,
        "status": operation.status.value,
        "requestedBy": operation.requested_by,
        "createdAt": _iso(operation.created_at),
        "startedAt": _iso(operation.started_at),
        "finishedAt": _iso(operation.finished_at),
        "supersededBy": operation.superseded_by,
        "summary": None
        if summary is None
        else {
            "changes": summary.changes,
            "durationSeconds": round(summary.duration_seconds, 3),
            "error": summary.error,
            "code": summary.code,
            "recovered": summary.recovered,
            "outputs": summary.outputs,
        },
    }


def _changed_resources(queue: StoredQueue, operation: Operation) -> list[dict[str, Any]]:
    """Resources the operation changes (or would change, for a preview): last status per resource."""
    latest: dict[tuple[str, str], str | None] = {}
    for event in queue.events(operation.id):
        if event.kind == "resource" and event.resource and event.op and event.op not in QUIET_OPS:
            latest[(event.resource, event.op)] = event.status
    return [{"resource": resource, "op": op, "status": status} for (resource, op), status in latest.items()]


def _report_sync(plan: SyncPlan, finished: list[Operation], *, as_json: bool, dry_run: bool) -> None:
    by_stack = {operation.stack.name: operation for operation in finished}
    if as_json:
        _print_json(
            {
                "environment": plan.environment,
                "dryRun": dry_run,
                "plan": [
                    {
                        "stack": item.stack.name,
                        "tenant": item.stack.tenant,
                        "action": item.action.value,
                        "reason": item.reason,
                    }
                    for item in plan.items
                ],
                "operations": [operation_document(operation) for operation in finished],
                "succeeded": sum(op.status is OperationStatus.succeeded for op in finished),
                "failed": sum(op.status is OperationStatus.failed for op in finished),
                "skipped": len(plan.with_action(SyncAction.skip)),
            }
        )
        return
    counts = {action: len(plan.with_action(action)) for action in SyncAction}
    heading = ", ".join(f"{count} {action.value}" for action, count in counts.items() if count)
    typer.echo(f"sync {plan.environment}{' (dry run)' if dry_run else ''}: {heading or 'no tenants'}")
    for item in plan.items:
        if item.action is SyncAction.unchanged:
            continue
        operation = by_stack.get(item.stack.name)
        if operation is None:
            typer.echo(f"  {item.action.value:<9} {item.stack.name}: {item.reason}")
        else:
            typer.echo(f"  {item.action.value:<9} {describe_outcome(operation)}")
    if finished:
        failed = [op for op in finished if op.status is OperationStatus.failed]
        typer.echo(
            f"{len(finished) - len(failed)} succeeded, {len(failed)} failed"
            + (f"; {counts[SyncAction.skip]} skipped (see above)" if counts[SyncAction.skip] else "")
        )


# --- small pieces ------------------------------------------------------------------------------------


def _factory() -> EngineFactory:
    # Looked up at call time so tests can replace ``make_engine``.
    return make_engine


def _settings(
    project: Path | None, tenants: Path | None, state_dir: Path | None, *, parallel: int | None = None
) -> AutomationSettings:
    given: dict[str, Any] = {
        "project_dir": project,
        "tenants_dir": tenants,
        "state_dir": state_dir,
        "max_parallel": parallel,
    }
    try:
        return AutomationSettings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as error:
        # Queue settings are validated on their own (QueueSettings): their errors name no field.
        problems = "; ".join(
            f"TENANCY_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in error.errors()
        )
        _fail(f"invalid settings: {problems}", exit_codes.INVALID_INPUT, False)


def _open_queue(settings: AutomationSettings, as_json: bool) -> OpenQueue:
    """The queue the settings name (the service's Redis when TENANCY_SERVICE_BACKEND=redis), checked
    to answer before anything is submitted to it."""
    opened = settings.open_queue()
    if opened.redis is not None:
        from redis.exceptions import RedisError

        try:
            opened.redis.ping()
        except RedisError as error:
            opened.close()
            _fail(
                f"cannot reach {settings.queue.describe()}: {type(error).__name__}; check "
                "TENANCY_SERVICE_REDIS_SENTINELS/TENANCY_SERVICE_REDIS_URL and the password",
                exit_codes.OPERATION_FAILED,
                as_json,
            )
    return opened


def _engine(settings: AutomationSettings, as_json: bool) -> Engine:
    try:
        return _factory()(settings)
    except PulumiCliMissing as error:
        _fail(error.message, exit_codes.PULUMI_CLI_MISSING, as_json, code=error.code)


def _check_environment(env: str, as_json: bool) -> None:
    if env not in ENVIRONMENTS:
        _fail(
            f"unknown environment {env!r}: use one of {', '.join(ENVIRONMENTS)}",
            exit_codes.INVALID_INPUT,
            as_json,
        )


def _stack(env: str, tenant: str, as_json: bool) -> StackRef:
    _check_environment(env, as_json)
    problem = not_a_tenant_name(tenant)
    if problem is not None:
        _fail(problem, exit_codes.INVALID_INPUT, as_json)
    return StackRef(env, tenant)


def _read_spec(settings: AutomationSettings, stack: StackRef, as_json: bool) -> dict[str, Any]:
    """The tenant's validated spec document (normal form: what an operation applies); exit 2 naming
    file, field and reason when invalid."""
    return _read_tenant(settings, stack, as_json).to_document()


def _read_tenant(settings: AutomationSettings, stack: StackRef, as_json: bool) -> TenantSpec:
    """The tenant's validated spec; exit 2 naming file, field and reason when invalid."""
    path = settings.tenants_dir / stack.environment / f"{stack.tenant}.yaml"
    if not path.is_file():
        present = sorted(p.stem for p in (settings.tenants_dir / stack.environment).glob("*.yaml"))
        known = f" (tenants in {stack.environment}: {', '.join(present)})" if present else ""
        _fail(f"no tenant file {path}{known}", exit_codes.INVALID_INPUT, as_json)
    try:
        spec = read_tenant_file(path, environment=stack.environment)
    except SpecError as error:
        _spec_failure(error, as_json)
    if spec.name != stack.tenant:
        _spec_failure(
            SpecError([SpecIssue(str(path), "name", f"is {spec.name!r} but the file is {path.name}")]),
            as_json,
        )
    return spec


def _requester() -> str:
    actor = os.environ.get("GITHUB_ACTOR")
    if actor:
        return f"github:{actor}"
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _spec_failure(error: SpecError, as_json: bool) -> NoReturn:
    if as_json:
        issues = [{"file": i.file, "field": i.field, "reason": i.reason} for i in error.issues]
        _print_json({"error": {"code": "invalid_input", "issues": issues}})
    else:
        for issue in error.issues:
            typer.echo(f"error: {issue}", err=True)
        typer.echo("nothing was run: fix the tenant file(s) first", err=True)
    raise typer.Exit(exit_codes.INVALID_INPUT)


def _fail(message: str, exit_code: int, as_json: bool, *, code: str | None = None) -> NoReturn:
    if as_json:
        default_code = {
            exit_codes.INVALID_INPUT: "invalid_input",
            exit_codes.PULUMI_CLI_MISSING: "pulumi_cli_missing",
        }
        _print_json({"error": {"code": code or default_code.get(exit_code, "failed"), "message": message}})
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(exit_code)


def _print_json(document: dict[str, Any]) -> None:
    typer.echo(json.dumps(document, indent=2, default=str))


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


def _display_value(value: Any) -> str:
    if isinstance(value, str):
        return value if "\n" not in value else "\n    " + value.rstrip("\n").replace("\n", "\n    ")
    return json.dumps(value)
