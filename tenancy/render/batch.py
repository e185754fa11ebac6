"""Render many stacks (``tenantctl render --all``): in this process, or across the machine's cores.

Each stack is rendered once, by this process or by one worker process, and written to its own
``OUT/<stack>/`` (and schema-checked there, with ``validate``); results come back in the order the
stacks were given, so what the command prints does not depend on which worker finished first.
Workers are forked after this process has rendered (and checked) the first stack itself: the Pulumi
SDK, the providers, the programs' modules and the schema are loaded by then and shared with every
worker instead of being loaded again by each.

A stack that fails raises its error (``SpecError``, ``RenderError``, or whatever the program raised) at
its place in the order, after every stack before it was yielded: the command reports exactly what it
reported when it rendered one stack after another. Stacks after the failing one may have been written
by then (each is a complete render of its own stack); none of them is reported.

What a program logs while a worker renders it (``pulumi.log.warn`` under mocks goes to Python
logging) is sent back and logged here, just before its stack is yielded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import pickle
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenancy.render.validate import SchemaProblem, schema_problems
from tenancy.render.write import RenderError, render_stack
from tenancy.spec.errors import SpecError, SpecIssue

# Stacks handed to the workers ahead of the one reported next: enough to keep every worker busy,
# few enough that results wait in memory only briefly and little is rendered after a failure.
_AHEAD_PER_WORKER = 2
# A worker holds about 100 MiB (most of it shared with this process): on a large CI runner the
# default stays within a GiB; --jobs asks for more.
MAX_DEFAULT_JOBS = 8


@dataclass(frozen=True)
class StackRender:
    """What the command reports about one rendered stack."""

    stack: str
    manifest_count: int
    release_count: int
    warnings: tuple[str, ...]
    directory: Path
    problems: tuple[SchemaProblem, ...] = ()  # with validate: what the schema check found in it


def default_jobs() -> int:
    """The CPUs this process may run on, at most ``MAX_DEFAULT_JOBS``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, MAX_DEFAULT_JOBS)


def render_stacks(
    stacks: Sequence[str], *, project_dir: Path, out: Path, jobs: int = 1, validate: bool = False
) -> Iterator[StackRender]:
    """Render ``stacks`` below ``out`` and yield each one's report, in the order given.

    ``jobs`` > 1 renders in that many worker processes (forked; where there is no fork, or fewer
    than three stacks, everything runs in this process). ``validate``: each report also holds the
    schema problems of what was written (``tenancy.render.validate.schema_problems``).
    """
    if not stacks:
        return
    # The first stack here: its imports and caches (the schema's too) are then shared with the
    # workers, or with the stacks after it.
    yield _render_here(stacks[0], project_dir=project_dir, out=out, validate=validate)
    with _long_lived_frozen():
        if jobs <= 1 or len(stacks) < 3 or "fork" not in multiprocessing.get_all_start_methods():
            for stack in stacks[1:]:
                yield _render_here(stack, project_dir=project_dir, out=out, validate=validate)
        else:
            yield from _render_in_workers(
                stacks[1:], project_dir=project_dir, out=out, jobs=jobs, validate=validate
            )


@contextlib.contextmanager
def _long_lived_frozen() -> Iterator[None]:
    """Move what is alive now (modules, the SDK, caches) out of the garbage collector's sight.

    After the first stack this process holds what every later stack uses: about 180,000 objects that
    each full collection walked again, 15% of a tenant's CPU. Frozen, they are left alone, and a
    forked worker's collector does not touch (and so copy) the memory pages holding them. Objects
    still freed by reference counting are unaffected; everything is unfrozen when the batch ends.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _render_here(stack: str, *, project_dir: Path, out: Path, validate: bool) -> StackRender:
    rendered, directory = render_stack(stack, project_dir=project_dir, out=out)
    return StackRender(
        stack=rendered.stack,
        manifest_count=rendered.manifest_count,
        release_count=rendered.release_count,
        warnings=rendered.warnings,
        directory=directory,
        problems=tuple(schema_problems(directory)) if validate else (),
    )


def _render_in_workers(
    stacks: Sequence[str], *, project_dir: Path, out: Path, jobs: int, validate: bool
) -> Iterator[StackRender]:
    workers = min(jobs, len(stacks))
    pending: deque[Future[_Outcome]] = deque()
    remaining = iter(stacks)

    def submit(stack: str) -> None:
        pending.append(executor.submit(_render_in_worker, stack, project_dir, out, validate))

    # The first submit forks every worker.
    executor = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker
    )
    try:
        for stack in remaining:
            submit(stack)
            if len(pending) >= workers * _AHEAD_PER_WORKER:
                break
        while pending:
            outcome = pending.popleft().result()
            for stack in remaining:  # keep the workers fed while this one is reported
                submit(stack)
                break
            for record in outcome.log_records:
                logging.getLogger(None if record.name == "root" else record.name).handle(record)
            yield outcome.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class _Outcome:
    """A worker's answer for one stack: its report or its error, and what the program logged."""

    rendered: StackRender | None
    spec_issues: list[SpecIssue] | None = None
    render_error: str | None = None
    error: BaseException | None = None
    log_records: tuple[logging.LogRecord, ...] = ()

    def result(self) -> StackRender:
        if self.spec_issues is not None:
            raise SpecError(self.spec_issues)
        if self.render_error is not None:
            raise RenderError(self.render_error)
        if self.error is not None:
            raise self.error
        assert self.rendered is not None
        return self.rendered


class _CollectRecords(logging.Handler):
    """In a worker: keep what is logged, to be handled by the parent's logging as if logged there."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args, record.exc_info = record.getMessage(), None, None
        self.records.append(record)


_collected = _CollectRecords()
_inherited: list[Any] = []


def _start_worker() -> None:
    # The parent's event loop shares its epoll instance with this process after fork: keep it alive,
    # unused and unclosed (closing it would unregister the parent's descriptors), and use a new one.
    with contextlib.suppress(RuntimeError):
        _inherited.append(asyncio.get_event_loop())
    asyncio.set_event_loop(asyncio.new_event_loop())
    root = logging.getLogger()
    root.handlers = [_collected]


def _render_in_worker(stack: str, project_dir: Path, out: Path, validate: bool) -> _Outcome:
    _collected.records = []
    try:
        rendered = _render_here(stack, project_dir=project_dir, out=out, validate=validate)
    except SpecError as error:
        return _Outcome(None, spec_issues=error.issues, log_records=_records())
    except RenderError as error:
        return _Outcome(None, render_error=str(error), log_records=_records())
    except Exception as error:  # anything else: the parent raises it (or its text, if it cannot travel)
        return _Outcome(None, error=_portable(error), log_records=_records())
    return _Outcome(rendered, log_records=_records())


def _records() -> tuple[logging.LogRecord, ...]:
    return tuple(_collected.records)


def _portable(error: Exception) -> BaseException:
    """``error`` as it can travel to the parent, with the worker's traceback as a note."""
    described = "".join(traceback.format_exception(error))
    try:
        error.add_note(f"raised in a render worker process:\n{described}")
        return pickle.loads(pickle.dumps(error))  # type: ignore[no-any-return]
    except Exception:
        return RuntimeError(f"rendering failed in a worker process:\n{described}")
