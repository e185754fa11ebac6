"""``sync``: bring every tenant stack of an environment in line with ``tenants/<env>/``.

Planning is separate from running so ``sync --dry-run`` and CI can show the plan, and tests can check
decisions without an engine. A tenant is *changed* when the fingerprint of its spec differs from the
spec of the stack's last successful update: that record comes from the local operation history, and
when the history does not know a stack (a fresh CI runner), from the engine's backend.

Removal is deliberate: a stack whose tenant file is gone is destroyed only with ``prune``, and only
when its deployed outputs say deletion protection is off. Anything else is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from tenancy.automation.contract import (
    Engine,
    EngineInventory,
    Operation,
    OperationKind,
    StackRef,
)
from tenancy.automation.errors import AutomationError, StackNotFound
from tenancy.automation.fingerprint import spec_fingerprint


class SyncAction(StrEnum):
    create = "create"  # no stack yet: up creates it
    update = "update"  # spec changed (or --all): up
    unchanged = "unchanged"  # same spec as the last successful update: nothing to do
    destroy = "destroy"  # tenant file removed, --prune, deletion protection off
    skip = "skip"  # would need a destroy, but not allowed: see the reason


@dataclass(frozen=True)
class SyncItem:
    stack: StackRef
    action: SyncAction
    reason: str
    spec: dict[str, Any] | None = None

    @property
    def operation_kind(self) -> OperationKind | None:
        if self.action in (SyncAction.create, SyncAction.update):
            return OperationKind.up
        if self.action is SyncAction.destroy:
            return OperationKind.destroy
        return None


@dataclass(frozen=True)
class SyncPlan:
    environment: str
    items: tuple[SyncItem, ...]

    def with_action(self, *actions: SyncAction) -> list[SyncItem]:
        return [item for item in self.items if item.action in actions]

    @property
    def to_run(self) -> list[SyncItem]:
        return [item for item in self.items if item.operation_kind is not None]


class OperationHistory(Protocol):
    """What sync needs from the queue."""

    def applied(self, environment: str) -> dict[str, Operation]: ...

    def submit(
        self,
        stack: StackRef,
        kind: OperationKind,
        *,
        spec: dict[str, Any] | None,
        requested_by: str,
        incarnation: str | None = None,
    ) -> Operation: ...


@dataclass(frozen=True)
class _Deployed:
    exists: bool
    fingerprint: str | None  # None: exists but the applied spec is unknown
    source: str  # where we know it from, for reasons shown to people
    spec: dict[str, Any] | None = None


def plan_sync(
    environment: str,
    tenants: Mapping[str, dict[str, Any]],
    *,
    history: OperationHistory,
    engine: Engine,
    prune: bool = False,
    everything: bool = False,
    lookups: int = 8,
) -> SyncPlan:
    """Decide, per tenant, what sync does. ``tenants`` maps name -> spec document (validated).
    ``lookups``: backend queries run at once for stacks the history does not know."""
    deployed = _deployed_state(environment, set(tenants), history=history, engine=engine, lookups=lookups)
    items: list[SyncItem] = []
    for name in sorted(tenants):
        stack = StackRef(environment, name)
        spec = tenants[name]
        state = deployed.get(name)
        if state is None or not state.exists:
            items.append(SyncItem(stack, SyncAction.create, "new tenant: no stack yet", spec))
        elif everything:
            items.append(SyncItem(stack, SyncAction.update, "--all: every tenant is updated", spec))
        elif state.fingerprint is None:
            items.append(
                SyncItem(stack, SyncAction.update, f"the spec last applied is unknown ({state.source})", spec)
            )
        elif state.fingerprint != spec_fingerprint(spec):
            items.append(
                SyncItem(
                    stack, SyncAction.update, f"spec changed since the last update ({state.source})", spec
                )
            )
        else:
            items.append(SyncItem(stack, SyncAction.unchanged, f"up to date ({state.source})", spec))

    for name in sorted(set(deployed) - set(tenants)):
        state = deployed[name]
        if state.exists:
            items.append(_removal(StackRef(environment, name), state, engine=engine, prune=prune))
    return SyncPlan(environment=environment, items=tuple(items))


def submit_plan(
    plan: SyncPlan,
    history: OperationHistory,
    *,
    requested_by: str,
    incarnations: Mapping[str, str] | None = None,
) -> list[Operation]:
    """Queue the plan's operations; the worker runs them (different tenants in parallel). Each carries
    its tenant's incarnation marker from ``incarnations`` (tenant name -> marker)."""
    operations = []
    for item in plan.to_run:
        kind = item.operation_kind
        assert kind is not None
        incarnation = (incarnations or {}).get(item.stack.tenant)
        operations.append(
            history.submit(
                item.stack, kind, spec=item.spec, requested_by=requested_by, incarnation=incarnation
            )
        )
    return operations


def _deployed_state(
    environment: str, wanted: set[str], *, history: OperationHistory, engine: Engine, lookups: int
) -> dict[str, _Deployed]:
    """What is deployed per tenant: the local history first, the backend for what it does not know."""
    known: dict[str, _Deployed] = {}
    for name, operation in history.applied(environment).items():
        if operation.kind is OperationKind.destroy:
            known[name] = _Deployed(exists=False, fingerprint=None, source=f"destroyed by {operation.id[:8]}")
        else:
            known[name] = _Deployed(
                exists=True,
                fingerprint=spec_fingerprint(operation.spec),
                source=f"operation {operation.id[:8]}",
                spec=operation.spec,
            )
    if not isinstance(engine, EngineInventory):
        return known
    in_backend = {stack.tenant for stack in engine.stacks(environment)}
    unknown = sorted(name for name in in_backend if not (name in known and known[name].exists))
    # Each lookup is a CLI call: ask for many stacks at once (a fresh CI runner knows none of them).
    asked = [name for name in unknown if name in wanted]
    with ThreadPoolExecutor(max_workers=max(1, min(lookups, len(asked) or 1))) as pool:
        fingerprints = dict(
            zip(
                asked,
                pool.map(lambda n: engine.applied_fingerprint(StackRef(environment, n)), asked),
                strict=True,
            )
        )
    for name in unknown:
        known[name] = _Deployed(exists=True, fingerprint=fingerprints.get(name), source="backend")
    for name, state in list(known.items()):
        if state.exists and name not in in_backend:
            # Removed behind the history's back (by hand, or another machine's history).
            known[name] = _Deployed(exists=False, fingerprint=None, source="backend")
    return known


def _removal(stack: StackRef, state: _Deployed, *, engine: Engine, prune: bool) -> SyncItem:
    if not prune:
        return SyncItem(
            stack,
            SyncAction.skip,
            "tenant file removed; run sync with --prune to destroy its stack",
        )
    protection = _deletion_protection(stack, state, engine)
    if protection is None:
        return SyncItem(
            stack,
            SyncAction.skip,
            "tenant file removed, but whether deletion protection is on cannot be read; "
            "check the stack with `tenantctl outputs` and destroy it by hand",
        )
    if protection:
        return SyncItem(
            stack,
            SyncAction.skip,
            "tenant file removed, but deletion protection is on: restore the file with "
            "deletionProtection: false, sync, then remove the file and sync --prune",
        )
    return SyncItem(stack, SyncAction.destroy, "tenant file removed and deletion protection is off")


def _deletion_protection(stack: StackRef, state: _Deployed, engine: Engine) -> bool | None:
    """The deployed stack's own answer first; the last applied spec when outputs cannot be read."""
    try:
        value = engine.outputs(stack).get("deletionProtection")
    except StackNotFound:
        value = None
    except AutomationError:
        value = None
    if isinstance(value, bool):
        return value
    if state.spec is not None:
        protected = state.spec.get("deletionProtection", True)  # the schema's default
        return bool(protected)
    return None
