"""Making what a write stored survive a power loss, not only a crash of the process.

A file written and renamed into place is safe from a ``kill -9`` as soon as the calls return (the
kernel has it), but until it is flushed a power loss or a kernel panic can lose it, or keep the
rename and lose the data. So a group of commits is acknowledged only once its objects (the pack and
its index, or the loose objects), the folders naming them, the branch's new value (its lock file
before the rename) and the branch's folder are flushed: one round of these per group, whatever its
size, so group commit spreads their cost over every change in the group.

``fsync`` is the one place the service asks for it, so tests can see what is flushed and in which
order. ``os.fsync`` releases the GIL: other request threads run while the disk works.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def fsync(descriptor: int) -> None:
    """Flush the file open as ``descriptor`` (data and metadata) to the disk."""
    os.fsync(descriptor)


def sync_file(path: Path) -> bool:
    """Flush the file at ``path``; False when there is none (nothing to flush)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fsync(descriptor)
    finally:
        os.close(descriptor)
    return True


def sync_folders(paths: Iterable[Path]) -> None:
    """Flush each folder once (their entries: files created, renamed or removed in them), in order."""
    for path in dict.fromkeys(paths):
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fsync(descriptor)
        finally:
            os.close(descriptor)
