"""Which tenant incarnation an operation belongs to, whoever queues it.

A tenant's incarnation is the life of its file, from the commit that created it to the one that
deletes it; its marker is ``<env>:<creating commit>`` (see ``tenancy.service.core.incarnation``). The
service reads its tenants repository; ``tenantctl`` reads the git repository that holds its tenants
directory, so an operation the CLI queues carries the marker of the file it applies. Where both read
one history (the deploy workflow's checkout of the tenants repository the service pushes to, or
``--tenants .tenancy/tenants-repo/tenants``) the markers agree; where they do not, the service's
tenant roles simply never see the CLI's operations (platform-admins see every one).

A file with no committed creation (not in git, new and not committed yet, or re-created in the
working copy after its deletion was committed) belongs to no incarnation anyone can own:
``<env>:uncommitted``, which never matches a tenant's marker.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from tenancy.automation.contract import Operation, OperationKind, OperationQueue, OperationStatus, StackRef

UNCOMMITTED = "uncommitted"
_GIT_TIMEOUT_SECONDS = 60


def incarnation_marker(environment: str, creating_commit: str | None) -> str:
    return f"{environment}:{creating_commit or UNCOMMITTED}"


def checkout_incarnations(tenants_dir: Path, environment: str, names: Iterable[str]) -> dict[str, str]:
    """The marker of each tenant of ``names`` as the git checkout holding ``tenants_dir`` has it (one
    git process for all of them)."""
    wanted = sorted(set(names))
    latest: dict[str, str] = {}  # path -> its newest status in history: "A" (added) or "D" (deleted)
    created: dict[str, str] = {}  # path -> the newest commit that added it
    for sha, status, path in _additions_and_deletions(tenants_dir, environment):
        latest.setdefault(path, status)
        if status == "A":
            created.setdefault(path, sha)
    markers = {}
    for name in wanted:
        path = f"{environment}/{name}.yaml"
        if (tenants_dir / path).is_file():
            # The file being applied: its creation only while the branch still has it.
            commit: str | None = created.get(path) if latest.get(path) == "A" else None
        else:
            commit = created.get(path)  # a destroy: the incarnation last created, deleted since
        markers[name] = incarnation_marker(environment, commit)
    return markers


def _additions_and_deletions(tenants_dir: Path, environment: str) -> list[tuple[str, str, str]]:
    """(commit, "A" or "D", path relative to ``tenants_dir``) for the environment's files, newest
    first; [] when there is no git, no repository or no commit."""
    log = run_git(
        tenants_dir,
        "log",
        "--no-renames",  # a rename is a deletion and a creation, as the service sees it
        "--diff-filter=AD",
        "--name-status",
        "--relative",
        "--format=%x00%H",
        "HEAD",
        "--",
        f"{environment}/",
    )
    if log is None:
        return []
    found: list[tuple[str, str, str]] = []
    commit = ""
    for line in log.splitlines():
        if line.startswith("\0"):
            commit = line[1:].strip()
        elif "\t" in line and commit:
            status, path = line.split("\t", 1)
            if status in ("A", "D"):
                found.append((commit, status, path))
    return found


def stack_history(queue: OperationQueue, stack: StackRef, *, first: int = 50) -> Iterator[Operation]:
    """The stack's operations, newest first, read in growing pages as a scan goes on: a scan that stops
    at an early operation reads ``first`` of them, and one that must look further is never cut off at
    a fixed depth. (A failed destroy followed by 50 previews, refused updates or backups of the name
    must still be found, or the stack it holds goes to the next tenant of the name.) An operation
    queued between two pages moves the older ones down, so one may be yielded twice, never skipped."""
    seen, limit = 0, first
    while True:
        page = queue.recent(stack=stack, limit=limit)
        yield from page[seen:]
        if len(page) < limit:
            return
        seen, limit = len(page), limit * 4


def undestroyed_predecessor(history: Iterable[Operation], incarnation: str | None) -> Operation | None:
    """The failed destroy of another incarnation that still holds the stack, or None.

    ``history`` is the stack's operations, newest first. A tenant deleted and re-created under the
    same name gets the same stack (``<env>.<name>``): when the earlier incarnation's destroy failed,
    its resources (its Qdrant and the data in it) are still in that stack, and an update of the new
    incarnation would take them over. Only a destroy that succeeded, or an update that succeeded
    since, frees the stack; failed updates (refused ones included) do not. Unknown incarnations
    (``None``: records from before operations carried one) are never told apart."""
    for operation in history:
        if operation.status not in (OperationStatus.succeeded, OperationStatus.failed):
            continue  # queued, running or superseded: it changed nothing yet
        if operation.kind is OperationKind.destroy:
            if operation.status is OperationStatus.succeeded:
                return None
            if incarnation is None or operation.incarnation is None:
                return None
            return operation if operation.incarnation != incarnation else None
        if operation.kind is OperationKind.up and operation.status is OperationStatus.succeeded:
            return None
    return None


def run_git(tenants_dir: Path, *args: str) -> str | None:
    """``git -C tenants_dir <args>``'s output; None when there is no such directory, no git, no
    repository, or the command fails or times out."""
    if not tenants_dir.is_dir():
        return None
    try:
        result = subprocess.run(
            ["git", "-C", str(tenants_dir), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_SECONDS,
            check=False,
            env={**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None
