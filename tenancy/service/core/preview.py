"""Preview without the Pulumi CLI: run the real tenant program under mocks for the current spec and for
the proposed one, and compare what each declares.

This answers "which resources would change, and which fields" in a few hundred milliseconds on any
machine; it cannot know the live state (that is what the Pulumi preview operation adds where the CLI
is present). Secret values are masked in everything it returns.

Pulumi's mock runtime is process-global, so renders run one at a time. ``PreviewGate`` bounds how
many previews may wait for their turn (per caller and overall) and makes them wait on the event loop,
not in the thread pool every synchronous route shares: a flood of previews is refused with
``preview_busy`` instead of stalling every other request.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import yaml

from tenancy.render.runtime import DeclaredResource, StackCapture, capture_program, contract_for
from tenancy.service.core.errors import ServiceError
from tenancy.service.core.processes import take_free_lock
from tenancy.spec.platform import read_platform_config_file

MASK = "[secret]"
_MAX_FIELDS_PER_RESOURCE = 50
# Pulumi's mock runtime is process-global: one capture at a time.
_RENDER_LOCK = threading.Lock()


@dataclass
class ResourceChange:
    type: str
    name: str
    action: str  # create | update | delete | same
    changed_fields: list[str] = field(default_factory=list)


@dataclass
class RenderedChange:
    changes: list[ResourceChange]
    desired: list[tuple[str, str, dict[str, Any]]]

    @property
    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for change in self.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        return counts


class PreviewGate:
    """At most ``max_in_flight`` previews rendering or waiting, ``max_per_principal`` of one caller;
    one renders at a time in a process. Waiting happens on the event loop: no thread is held until
    it is a preview's turn to render.

    With ``slots`` (a folder of the state directory), the bounds hold for every process of the
    service together (``tenantctl serve --processes``): a preview in flight holds a ``flock`` on one
    of ``max_in_flight`` files and one of its caller's ``max_per_principal`` (named by a hash of the
    caller, removed when released), so N processes never admit N times as many, and a process that
    dies frees its slots with it."""

    RETRY_AFTER_SECONDS = 2

    def __init__(self, *, max_in_flight: int, max_per_principal: int, slots: Path | None = None) -> None:
        self.max_in_flight = max_in_flight
        self.max_per_principal = max_per_principal
        self._counts_lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()
        self._turn: anyio.Lock | None = None  # made on first use, inside the serving event loop
        self._slots = slots
        if slots is not None:
            slots.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def admitted(self, who: str) -> Iterator[None]:
        """Counted among the previews in flight while held (raise ``preview_busy`` when over a
        bound), for a render already on a worker thread (a change request's preview)."""
        release = self._admit(who) if self._slots is None else self._admit_shared(self._slots, who)
        try:
            yield
        finally:
            release()

    @asynccontextmanager
    async def turn(self, who: str) -> AsyncIterator[None]:
        """Wait for this caller's turn to render (raise ``preview_busy`` when over a bound)."""
        release = self._admit(who) if self._slots is None else self._admit_shared(self._slots, who)
        try:
            if self._turn is None:
                self._turn = anyio.Lock()
            async with self._turn:
                yield
        finally:
            release()

    def _admit(self, who: str) -> Callable[[], None]:
        with self._counts_lock:
            if self._in_flight[who] >= self.max_per_principal:
                raise self._busy(f"you already have {self._in_flight[who]} preview(s) in flight")
            if self._in_flight.total() >= self.max_in_flight:
                raise self._busy("the service is rendering as many previews as it takes at once")
            self._in_flight[who] += 1

        def release() -> None:
            with self._counts_lock:
                self._in_flight[who] -= 1
                if self._in_flight[who] <= 0:
                    del self._in_flight[who]

        return release

    def _admit_shared(self, slots: Path, who: str) -> Callable[[], None]:
        caller = hashlib.sha256(who.encode()).hexdigest()[:32]
        mine = take_free_lock(
            [slots / f"caller-{caller}-{index}.lock" for index in range(self.max_per_principal)]
        )
        if mine is None:
            raise self._busy(f"you already have {self.max_per_principal} preview(s) in flight")
        every = take_free_lock([slots / f"all-{index}.lock" for index in range(self.max_in_flight)])
        if every is None:
            _give_back(mine, remove=True)
            raise self._busy("the service is rendering as many previews as it takes at once")

        def release() -> None:
            _give_back(every, remove=False)
            _give_back(mine, remove=True)

        return release

    def _busy(self, why: str) -> ServiceError:
        return ServiceError(
            "preview_busy",
            f"{why}; retry in {self.RETRY_AFTER_SECONDS} s",
            headers={"Retry-After": str(self.RETRY_AFTER_SECONDS)},
        )


def _give_back(slot: tuple[int, Path], *, remove: bool) -> None:
    descriptor, path = slot
    if remove:  # while still held, so no one takes the removed file for the path's
        path.unlink(missing_ok=True)
    os.close(descriptor)


def render_tenant(project_dir: Path, environment: str, name: str, document: dict[str, Any]) -> StackCapture:
    """Every resource the tenant program declares for ``document``, from a scratch tenants directory."""
    from tenancy.stacks import stack_outputs

    platform_config = read_platform_config_file(project_dir / f"Pulumi.{environment}.yaml")
    project = yaml.safe_load((project_dir / "Pulumi.yaml").read_text(encoding="utf-8"))["name"]
    stack = f"{environment}.{name}"
    with tempfile.TemporaryDirectory(prefix="tenant-preview-") as scratch:
        path = Path(scratch) / environment / f"{name}.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        with _RENDER_LOCK:
            # Pulumi's runtime drives the program on the calling thread's event loop; a request's
            # worker thread has none, so it gets a private one for the length of the capture.
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                return capture_program(
                    lambda: stack_outputs(stack, project_dir=project_dir),
                    stack=stack,
                    project=project,
                    config={"platform:tenantsDir": scratch},
                    stack_outputs={"tenantContract": contract_for(platform_config)},
                )
            finally:
                asyncio.set_event_loop(None)
                loop.close()


def masked_inputs(resource: DeclaredResource) -> dict[str, Any]:
    inputs: dict[str, Any] = _copy(resource.inputs)
    for path in resource.secret_paths:
        _mask_at(inputs, path)
    if resource.kind == "Secret":  # Kubernetes Secrets hold secrets whether or not Pulumi marked them
        for key in ("data", "stringData"):
            if isinstance(inputs.get(key), dict):
                inputs[key] = dict.fromkeys(inputs[key], MASK)
    return inputs


def masked_outputs(capture: StackCapture) -> dict[str, Any]:
    return {key: MASK if key in capture.secret_outputs else value for key, value in capture.outputs.items()}


def compare(current: StackCapture | None, proposed: StackCapture) -> RenderedChange:
    before = {(r.type, r.name): masked_inputs(r) for r in current.resources} if current else {}
    after = {(r.type, r.name): masked_inputs(r) for r in proposed.resources}
    changes = []
    for key in sorted(before.keys() | after.keys()):
        if key not in before:
            changes.append(ResourceChange(*key, action="create"))
        elif key not in after:
            changes.append(ResourceChange(*key, action="delete"))
        else:
            fields = _differences(before[key], after[key], "")
            action = "update" if fields else "same"
            changes.append(
                ResourceChange(*key, action=action, changed_fields=fields[:_MAX_FIELDS_PER_RESOURCE])
            )
    desired = [(r.type, r.name, after[(r.type, r.name)]) for r in proposed.resources]
    return RenderedChange(changes=changes, desired=desired)


def preview_change(
    project_dir: Path, environment: str, name: str, current: dict[str, Any] | None, proposed: dict[str, Any]
) -> tuple[RenderedChange, dict[str, Any]]:
    """The change from ``current`` (None: the tenant does not exist yet) to ``proposed``; and the
    proposed stack's outputs, masked."""
    after = render_tenant(project_dir, environment, name, proposed)
    before = None
    if current is not None:
        try:
            before = render_tenant(project_dir, environment, name, current)
        except Exception:  # a hand-edited file that no longer renders: everything reads as new
            before = None
    return compare(before, after), masked_outputs(after)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _mask_at(document: Any, path: tuple[str, ...]) -> None:
    if not path:
        return
    *parents, last = path
    node = document
    for part in parents:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return
    if isinstance(node, dict) and last in node:
        node[last] = MASK
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = MASK


def _differences(before: Any, after: Any, prefix: str) -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(before.keys() | after.keys(), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in before or key not in after:
                found.append(path)
            else:
                found += _differences(before[key], after[key], path)
        return found
    if before != after:
        return [prefix or "(value)"]
    return []


def render_preview(
    project_dir: Path, stack: Any, current: dict[str, Any] | None, proposed: dict[str, Any]
) -> dict[str, Any]:
    """A change request's stored preview: the summary and the resources that change (JSON-ready)."""
    try:
        rendered, _outputs = preview_change(project_dir, stack.environment, stack.tenant, current, proposed)
    except Exception as error:  # the request is still worth filing; the reviewer sees why there is none
        return {"error": f"the preview could not be rendered ({type(error).__name__})"}
    return {
        "summary": rendered.summary,
        "changes": [
            {"type": c.type, "name": c.name, "action": c.action, "changedFields": c.changed_fields}
            for c in rendered.changes
            if c.action != "same"
        ],
    }
