"""An in-process engine double: what tests and benchmarks run the automation layer against.

It behaves like the Pulumi engine where the worker can tell the difference (changes, outputs with
secrets, deletion protection, a stale lock after an interrupted update) and records what the worker
did to it: every call in order, with its start and end, and how many operations overlapped on one
stack and overall. It can be slowed down, made to fail, interrupted mid-update, or paused.

Given a ``TenantProgram``, each ``up`` and ``preview`` also runs the REAL Pulumi program
(``tenancy.stacks``, what ``__main__.py`` runs) under Pulumi mocks, with exactly the stack config the
Pulumi engine would set (``tenant_stack_config``, the one function both use) plus what the Pulumi CLI
adds by itself (the defaults ``Pulumi.yaml`` declares): a key the program requires that the engine
does not set, or sets under another name, fails the operation as it would in production. Its
resources become the operation's events and its outputs the stack's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenancy.automation.contract import (
    APPLIED_SPEC_OUTPUT,
    SECRET_MASK,
    EmitEvent,
    EngineRequest,
    EngineResult,
    OperationKind,
    StackRef,
)
from tenancy.automation.errors import (
    OperationInterrupted,
    ProgramError,
    ProtectedResources,
    StackLocked,
    StackNotFound,
)
from tenancy.automation.fingerprint import spec_fingerprint
from tenancy.automation.stack_config import (
    PROGRAM_KINDS,
    StackConfig,
    platform_config_of,
    tenant_stack_config,
    write_operation_spec,
)
from tenancy.spec.yaml_loading import load_yaml

# Pulumi's mocks and runtime settings are process-wide: one program at a time.
_PROGRAM_LOCK = threading.Lock()


@dataclass(frozen=True)
class ProgramRun:
    """One run of the real program: the config it got, what it declared, what it exported."""

    stack: StackRef
    config: StackConfig
    resources: list[str]  # "<type> <name>", in declaration order
    outputs: dict[str, Any]
    secret_outputs: frozenset[str] = field(default_factory=frozenset)
    # Every resource as declared (tenancy.render.runtime.DeclaredResource): what a test checks against
    # the rights whoever runs the stack holds.
    declared: tuple[Any, ...] = field(default=(), repr=False, compare=False)


def cli_config_defaults(project_dir: Path) -> dict[str, str]:
    """What the Pulumi CLI adds to every stack's config by itself: the defaults ``Pulumi.yaml``
    declares, under the project's namespace, as strings (as the language host receives them)."""
    project = load_yaml((project_dir / "Pulumi.yaml").read_text(encoding="utf-8")) or {}
    defaults: dict[str, str] = {}
    for key, declaration in (project.get("config") or {}).items():
        if isinstance(declaration, Mapping) and "default" in declaration:
            name = key if ":" in key else f"{project['name']}:{key}"
            value = declaration["default"]
            defaults[name] = value if isinstance(value, str) else json.dumps(value)
    return defaults


def _ensure_event_loop() -> None:
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


class TenantProgram:
    """The real tenant program under mocks, given the config the Pulumi engine would give it."""

    def __init__(
        self,
        project_dir: Path,
        *,
        scratch_dir: Path,
        stack_config: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.project_dir = project_dir
        self.scratch_dir = scratch_dir
        self.stack_config = dict(stack_config or {})
        self.environ = environ  # None: this process's environment, read at each run
        self.runs: list[ProgramRun] = []

    def config_for(self, request: EngineRequest, operation_dir: Path) -> StackConfig:
        """Exactly what PulumiEngine sets on the stack for ``request`` (the spec written alike)."""
        tenants_dir = None
        if request.kind in PROGRAM_KINDS and request.spec is not None:
            tenants_dir = write_operation_spec(operation_dir, request.stack, request.spec)
        return tenant_stack_config(
            request.stack,
            request.kind,
            project_dir=self.project_dir,
            extra=self.stack_config,
            environ=os.environ if self.environ is None else self.environ,
            tenants_dir=tenants_dir,
            spec_hash=spec_fingerprint(request.spec) if request.spec is not None else None,
        )

    def run(self, request: EngineRequest) -> ProgramRun:
        """Run the program for ``request``; raise StackConfigMissing / ProgramError as the engine would."""
        from tenancy.render.runtime import capture_program, platform_outputs_for
        from tenancy.stacks import stack_outputs

        stack = request.stack
        operation_dir = self.scratch_dir / request.operation_id
        try:
            config = self.config_for(request, operation_dir)
            platform = platform_config_of(self.project_dir, stack.environment)
            given = {**cli_config_defaults(self.project_dir), **config.plain, **config.secret}
            project = load_yaml((self.project_dir / "Pulumi.yaml").read_text(encoding="utf-8"))["name"]
            with _PROGRAM_LOCK:
                _ensure_event_loop()  # the SDK runs the program on this thread's loop (workers have none)
                try:
                    capture = capture_program(
                        lambda: stack_outputs(stack.name, project_dir=self.project_dir),
                        stack=stack.name,
                        project=project,
                        config=given,
                        stack_outputs=platform_outputs_for(platform),
                    )
                except Exception as error:  # what the language host would report as the program's error
                    raise ProgramError(
                        f"the program failed for stack {stack.name}: {type(error).__name__}: {error}"
                    ) from None
        finally:
            shutil.rmtree(operation_dir, ignore_errors=True)
        run = ProgramRun(
            stack=stack,
            config=config,
            resources=[f"{r.type} {r.name}" for r in capture.resources],
            outputs=capture.outputs,
            secret_outputs=frozenset(capture.secret_outputs),
            declared=tuple(capture.resources),
        )
        self.runs.append(run)
        return run


@dataclass(frozen=True)
class EngineCall:
    """One ``run`` the worker made."""

    operation_id: str
    stack: StackRef
    kind: OperationKind
    spec: dict[str, Any] | None
    started: float
    ended: float


@dataclass
class _Deployed:
    spec: dict[str, Any] | None


class FakeEngine:
    """``Engine`` and ``EngineInventory`` in memory. ``delay`` is the time one operation takes."""

    def __init__(
        self, *, delay: float = 0.0, resources: int = 3, program: TenantProgram | None = None
    ) -> None:
        self.delay = delay
        self.resources = resources
        self.program = program
        self._program_outputs: dict[StackRef, ProgramRun] = {}
        self.calls: list[EngineCall] = []
        self.recoveries: list[StackRef] = []
        self.removed: list[StackRef] = []
        self.timeline: list[tuple[str, StackRef]] = []  # ("run" | "recover" | "remove", stack) in call order
        self.max_overlap_per_stack: Counter[StackRef] = Counter()  # most runs at once on one stack
        self.max_concurrency = 0  # most runs at once overall
        self._lock = threading.Lock()
        self._running: Counter[StackRef] = Counter()
        self._concurrency = 0
        self._deployed: dict[StackRef, _Deployed] = {}
        self._needs_recovery: set[StackRef] = set()
        self._failures: dict[StackRef, deque[Exception | str]] = {}
        self._interruptions: Counter[StackRef] = Counter()
        self._gate = threading.Event()
        self._gate.set()

    # --- steering ------------------------------------------------------------------------------

    def fail_next(self, stack: StackRef, error: Exception | str, *, times: int = 1) -> None:
        """The next ``times`` runs on ``stack`` fail: a str is returned as the engine's error, an
        exception is raised (as PulumiEngine raises mapped errors)."""
        with self._lock:
            self._failures.setdefault(stack, deque()).extend([error] * times)

    def interrupt_next(self, stack: StackRef, *, times: int = 1) -> None:
        """The next ``times`` runs on ``stack`` stop half-way, leaving the stack needing recovery
        (a stale lock and pending operations, as after a killed ``pulumi up``)."""
        with self._lock:
            self._interruptions[stack] += times

    def break_stack(self, stack: StackRef) -> None:
        """Leave ``stack`` as a crashed update would: it needs recovery before anything runs."""
        with self._lock:
            self._needs_recovery.add(stack)

    def release_stack(self, stack: StackRef) -> None:
        """The update that held ``stack`` (``break_stack``) finished: its lock is gone."""
        with self._lock:
            self._needs_recovery.discard(stack)

    def deploy(self, stack: StackRef, spec: dict[str, Any] | None) -> None:
        """Pretend ``spec`` was applied to ``stack`` earlier (a stack that already exists)."""
        with self._lock:
            self._deployed[stack] = _Deployed(spec=spec)

    def deployed_spec(self, stack: StackRef) -> dict[str, Any] | None:
        """The spec the last successful ``up`` applied (what the cluster runs), or None."""
        with self._lock:
            deployed = self._deployed.get(stack)
            return None if deployed is None else deployed.spec

    def pause(self) -> None:
        """Hold every run half-way until ``resume()``."""
        self._gate.clear()

    def resume(self) -> None:
        self._gate.set()

    def running(self, stack: StackRef | None = None) -> int:
        with self._lock:
            return self._concurrency if stack is None else self._running[stack]

    def calls_for(self, stack: StackRef) -> list[EngineCall]:
        with self._lock:
            return [call for call in self.calls if call.stack == stack]

    # --- Engine ----------------------------------------------------------------------------------

    def run(self, request: EngineRequest, emit: EmitEvent) -> EngineResult:
        stack = request.stack
        with self._lock:
            self.timeline.append(("run", stack))
            self._running[stack] += 1
            self._concurrency += 1
            self.max_overlap_per_stack[stack] = max(self.max_overlap_per_stack[stack], self._running[stack])
            self.max_concurrency = max(self.max_concurrency, self._concurrency)
        started = time.perf_counter()
        try:
            return self._run(request, emit)
        finally:
            with self._lock:
                self._running[stack] -= 1
                self._concurrency -= 1
                self.calls.append(
                    EngineCall(
                        request.operation_id, stack, request.kind, request.spec, started, time.perf_counter()
                    )
                )

    def _run(self, request: EngineRequest, emit: EmitEvent) -> EngineResult:
        stack, kind = request.stack, request.kind
        with self._lock:
            if stack in self._needs_recovery and kind is not OperationKind.preview:
                # What Pulumi says when another update holds the lock, or a killed one left it (a
                # preview takes no lock).
                raise StackLocked(
                    f"stack {stack.name} is locked by an update that did not finish; recover it first"
                )
            failure = self._failures[stack].popleft() if self._failures.get(stack) else None
            interrupt = self._interruptions[stack] > 0
            if interrupt:
                self._interruptions[stack] -= 1
            deployed = self._deployed.get(stack)

        if kind in (OperationKind.up, OperationKind.preview) and request.spec is None:
            raise ProgramError(f"{kind.value} of {stack.name} needs the tenant's spec")
        program_run = None
        if self.program is not None and kind in PROGRAM_KINDS:
            program_run = self.program.run(request)  # raises before any change, as the engine does
        if kind is OperationKind.destroy and deployed is not None:
            protected = (deployed.spec or {}).get("deletionProtection", True)
            if protected:
                raise ProtectedResources(
                    f"stack {stack.name} has protected resources (deletionProtection is on); "
                    "set deletionProtection: false, run up, then destroy"
                )

        op = self._step(kind, deployed, request.spec)
        labels = (
            program_run.resources
            if program_run is not None
            else [f"kubernetes:core/v1:ConfigMap {stack.tenant}-{index}" for index in range(self.resources)]
        )
        steps = len(labels)
        for index, resource in enumerate(labels):
            emit(kind="resource", resource=resource, op=op, status="started")
            if index == steps // 2:
                self._gate.wait()
                if interrupt:
                    with self._lock:
                        self._needs_recovery.add(stack)
                    raise OperationInterrupted(
                        f"the {kind.value} of {stack.name} was interrupted before it finished; "
                        "the stack is recovered before its next operation"
                    )
            if self.delay:
                time.sleep(self.delay / steps)
            emit(kind="resource", resource=resource, op=op, status="done")

        if isinstance(failure, Exception):
            raise failure
        if isinstance(failure, str):
            emit(kind="diagnostic", status="failed", message=failure)
            return EngineResult(succeeded=False, changes={op: steps}, error=failure)

        with self._lock:
            if kind is OperationKind.up:
                self._deployed[stack] = _Deployed(spec=request.spec)
                if program_run is not None:
                    self._program_outputs[stack] = program_run
            elif kind is OperationKind.destroy:
                self._deployed.pop(stack, None)
                self._program_outputs.pop(stack, None)
        outputs = self.outputs(stack) if kind is OperationKind.up else {}
        return EngineResult(succeeded=True, changes={op: steps} if steps else {}, outputs=outputs)

    @staticmethod
    def _step(kind: OperationKind, deployed: _Deployed | None, spec: dict[str, Any] | None) -> str:
        if kind is OperationKind.destroy:
            return "delete"
        if kind is OperationKind.refresh:
            return "refresh"
        if deployed is None:
            return "create"
        return "same" if deployed.spec == spec else "update"

    def needs_recovery(self, stack: StackRef) -> bool:
        with self._lock:
            return stack in self._needs_recovery

    def recover(self, stack: StackRef) -> str:
        with self._lock:
            was_broken = stack in self._needs_recovery
            self._needs_recovery.discard(stack)
            self.recoveries.append(stack)
            self.timeline.append(("recover", stack))
        if not was_broken:
            return f"checked stack {stack.name}: nothing was left to recover"
        return f"cancelled the stale lock on {stack.name}, cleared 1 pending operation and refreshed"

    def outputs(self, stack: StackRef, *, reveal_secrets: bool = False) -> dict[str, Any]:
        with self._lock:
            deployed = self._deployed.get(stack)
        if deployed is None:
            raise StackNotFound(f"stack {stack.name} does not exist")
        program_run = self._program_outputs.get(stack)
        if program_run is not None:
            return {
                key: SECRET_MASK if key in program_run.secret_outputs and not reveal_secrets else value
                for key, value in program_run.outputs.items()
            }
        spec = deployed.spec or {}
        return {
            "tenant": stack.tenant,
            "environment": stack.environment,
            "namespace": f"tenant-{stack.tenant}",
            "deletionProtection": spec.get("deletionProtection", True),
            "qdrantApiKey": f"key-for-{stack.tenant}" if reveal_secrets else SECRET_MASK,
            # As the tenant program exports it (tenancy.stacks.tenant).
            APPLIED_SPEC_OUTPUT: deployed.spec,
        }

    def remove(self, stack: StackRef) -> None:
        with self._lock:
            self._deployed.pop(stack, None)
            self.removed.append(stack)
            self.timeline.append(("remove", stack))

    # --- EngineInventory ---------------------------------------------------------------------------

    def stacks(self, environment: str | None = None) -> list[StackRef]:
        with self._lock:
            known = [s for s in self._deployed if environment is None or s.environment == environment]
        return sorted(known, key=lambda s: s.name)

    def applied_fingerprint(self, stack: StackRef) -> str | None:
        with self._lock:
            deployed = self._deployed.get(stack)
        return None if deployed is None else spec_fingerprint(deployed.spec)
