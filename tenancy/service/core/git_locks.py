"""Git lock files that a dead process left behind, told apart from those a live process holds.

Git (and libgit2) take a lock by creating ``<file>.lock`` with O_EXCL and renaming it over the file;
a process killed in between (an OOM kill, a container stop) leaves the lock file, and every later
writer of that file fails until someone deletes it. The file records no owner, so a lock is taken
for stale only when both hold:

- the caller holds the service's own commit lock (a ``flock``, which the kernel releases when its
  holder dies): no service process is writing the repository;
- no other live process has its working directory, or an open file, inside the repository: no
  person's ``git`` (even one waiting for an editor, with the lock file closed) and no ``git push``
  that outlived the service. The other processes of the service itself (``tenantctl serve
  --processes``) are known by the marker file each keeps open (``SERVICE_MARKER``) and do not
  count: they take git's locks only while holding the commit lock, which the caller holds, and the
  git programs they run are processes of their own, which do count.

Anything else is left alone and reported, so a lock a live process holds is never taken from it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger("tenancy.service")
# Our own lock files live beside git's and are not git's (flock releases them with their holder).
_OWN_PREFIX = "tenant-api"
# Kept open by every service process on the repository, for as long as it lives.
SERVICE_MARKER = "tenant-api-process.marker"


@dataclass(frozen=True)
class LiveHolder:
    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


def lock_files(git_dir: Path) -> list[Path]:
    """Every git lock file in ``git_dir``: the index, HEAD, config, packed-refs, refs and reflogs."""
    found = [
        path for path in git_dir.glob("*.lock") if not path.name.startswith(_OWN_PREFIX) and path.is_file()
    ]
    for folder in ("refs", "logs"):
        base = git_dir / folder
        if base.is_dir():
            found += [path for path in base.rglob("*.lock") if path.is_file()]
    return sorted(found)


def live_holders(root: Path) -> list[LiveHolder]:
    """Live processes other than this one that work inside ``root`` (cwd or an open file)."""
    root_text = str(root.resolve())
    prefix = root_text.rstrip("/") + "/"
    marker = str((root / ".git" / SERVICE_MARKER).resolve())
    me = os.getpid()
    holders = []
    try:
        pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []  # no /proc (not Linux): nothing can be shown to hold a lock
    for pid in pids:
        if pid == me:
            continue
        if _works_inside(pid, root_text, prefix, marker):
            holders.append(LiveHolder(pid, _command(pid)))
    return holders


def _works_inside(pid: int, root_text: str, prefix: str, marker: str) -> bool:
    """Whether ``pid`` works inside the repository and is not a process of the service itself."""
    try:
        inside = False
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target == marker:
                return False
            inside = inside or target.startswith(prefix)
        cwd = os.readlink(f"/proc/{pid}/cwd")
        return inside or cwd == root_text or cwd.startswith(prefix)
    except OSError:  # gone meanwhile, or not ours to look at
        return False


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as handle:
            return handle.read().strip() or "?"
    except OSError:
        return "?"


def clear_stale_locks(root: Path, git_dir: Path) -> tuple[list[Path], list[LiveHolder]]:
    """Remove the lock files in ``git_dir`` when no other live process works in ``root``.

    The caller must hold the service's commit lock. Returns (locks removed, live processes that kept
    the locks in place); both empty when there was nothing to do.
    """
    locks = lock_files(git_dir)
    if not locks:
        return [], []
    holders = live_holders(root)
    if holders:
        names = ", ".join(str(path.relative_to(git_dir)) for path in locks)
        _log.warning(
            "git lock(s) %s kept: held, or possibly held, by %s working in the repository",
            names,
            ", ".join(str(holder) for holder in holders),
        )
        return [], holders
    removed = []
    for path in locks:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:
            _log.error("could not remove the stale git lock %s: %s", path, error)
            continue
        removed.append(path)
        _log.warning("removed the stale git lock %s (its process died)", path.relative_to(git_dir))
    return removed, []
