"""Several server processes on one state directory (``tenantctl serve --processes N``).

One Python process runs one thread at a time, so the service used one core whatever the machine
had. ``--processes N`` runs N uvicorn processes on one listening socket (uvicorn's own supervisor:
it starts them, restarts one that dies and stops them all on SIGTERM or Ctrl-C). They share
everything through the state directory, as the service shared it with ``tenantctl`` before: the
tenants repository (per-tenant and commit ``flock``\\s, the branch moved by compare-and-swap), the
SQLite queue (writers take turns on a ``flock``), rate limits (a table mapped by every process),
idempotency records, API keys and change requests (SQLite).

Each process holds a share (``ProcessShare``): the lowest free index, kept by a ``flock`` of
``<state_dir>/processes/<supervisor pid>-<index>.lock`` for the life of the process (the kernel
frees it when the process dies, and the process uvicorn starts in its place takes it; two
``tenantctl serve`` commands on one state directory keep their own shares, as before). Share 0
runs what must run once (the key grace timer, the deleted tenants' backup sweep); the operation
worker threads are divided among the shares, so ``--workers`` (``TENANCY_MAX_PARALLEL``) bounds
the whole service.
"""

from __future__ import annotations

import fcntl
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

_held: list[int] = []  # the descriptors holding this process's share, open until it exits


@dataclass(frozen=True)
class ProcessShare:
    index: int
    count: int
    restarted: bool = False  # a process of this share ran before (uvicorn restarts one that died)

    @property
    def runs_singletons(self) -> bool:
        """Whether the jobs that must run once per service (not once per process) run here."""
        return self.index == 0

    @property
    def reconciles(self) -> bool:
        """Whether this process reconciles git with the queue as it starts: once per service start
        (share 0), and again whenever a process replaces one that died, which may have committed
        a change without queueing it. Every process doing it at once would queue each failed
        update again N times."""
        return self.index == 0 or self.restarted

    def workers(self, total: int) -> int:
        """This process's part of ``total`` worker threads (the first ``total % count`` get one more)."""
        return total // self.count + (1 if self.index < total % self.count else 0)


ALONE = ProcessShare(0, 1)


def usable_cpus() -> int:
    """The CPUs this process may run on, and no more than its cgroup's CPU quota (a container's
    limit) allows, rounded up: a process runs on one core at most, so more processes than this
    only take turns."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def default_processes() -> int:
    """One: each process groups only its own writers, so two pay about twice the rounds of flushes,
    one after the other on the commit lock; where flushes are slow (a disk shared with other jobs)
    that halved the writes of a few clients here, and at 50 clients two processes were level with
    one (README, "Several server processes"). ``--processes`` up to ``usable_cpus()`` where one
    process's CPU is the limit."""
    return 1


def _cgroup_cpu_quota() -> float | None:
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        microseconds = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        per = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if microseconds <= 0 or per <= 0 else microseconds / per
    except (OSError, ValueError):
        return None


def share_files(state_dir: Path, group: str, count: int) -> list[Path]:
    return [state_dir / "processes" / f"{group}-{index}.lock" for index in range(count)]


def claim_share(state_dir: Path, group: str, count: int, *, wait_seconds: float = 60.0) -> ProcessShare:
    """Take the lowest free share of ``count`` in ``group`` (the supervisor's pid) and keep it until
    this process exits. A share is freed when its process dies; the one uvicorn starts in its place
    may come up before the kernel has freed it, hence the wait."""
    files = share_files(state_dir, group, count)
    files[0].parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    while True:
        taken = take_free_lock(files)
        if taken is not None:
            descriptor, path = taken
            _held.append(descriptor)
            # The file's first holder writes a mark in it; finding one means a process held it before.
            restarted = os.pread(descriptor, 1, 0) == b"1"
            if not restarted:
                os.pwrite(descriptor, b"1", 0)
            return ProcessShare(files.index(path), count, restarted)
        if time.monotonic() > deadline:
            raise RuntimeError(f"all {count} process shares of {state_dir} are held by live processes")
        time.sleep(0.05)


def take_free_lock(paths: list[Path]) -> tuple[int, Path] | None:
    """A ``flock`` on the first of ``paths`` no one holds (never waits); None when all are held. A
    file removed by its holder as it released it (``preview._give_back``) is not the one at its path
    any more: taken again from the path."""
    for path in paths:
        while True:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                break
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = -1
            if current == os.fstat(descriptor).st_ino:
                return descriptor, path
            os.close(descriptor)  # removed meanwhile: try the path's new file
    return None


def release_shares(state_dir: Path, group: str, count: int) -> None:
    """Remove a stopped service's share files (its processes are gone)."""
    for path in share_files(state_dir, group, count):
        path.unlink(missing_ok=True)
