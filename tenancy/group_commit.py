"""Group commit: what writers hand in while one group is being committed goes into the next group.

The SQLite queue commits the submits that arrive together in one transaction, and the tenants
repository publishes the changes that arrive together as one pack and one ref update; both take
turns the same way, here. The first writer to find no leader commits everything waiting, its own
item included, then hands the lead to the oldest item that arrived meanwhile; the others sleep until
their item is done (the committer sets ``done`` and their ``wakeup``) or they are handed the lead.
Items are committed in the order they were handed in.

``join`` is ``add`` then ``wait``. A writer that must fix its item's place in the order before it
lets another writer go on (the tenants repository's pipelined writes, the queue's submits in commit
order) calls ``add``, does that, then ``wait``: it must call ``wait`` whatever happens in between,
since the lead may be handed to its item meanwhile and nothing else commits until it takes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Waiter(Protocol):
    """What a writer's item carries: set ``done`` then ``wakeup`` once it is committed or failed."""

    done: bool
    lead: bool  # handed the next group
    wakeup: threading.Event  # only its own thread wakes, not every waiter


W = TypeVar("W", bound=Waiter)


class GroupCommit(Generic[W]):
    def __init__(self, commit: Callable[[list[W]], None]) -> None:
        """``commit`` commits a group and marks each item done (or failed) before it returns."""
        self._commit = commit
        self._pending: list[W] = []
        self._lock = threading.Lock()
        self._leader_active = False

    def join(self, item: W) -> None:
        """Return once ``item`` is committed or failed: by another writer's group or by this one's."""
        self.add(item)
        self.wait(item)

    def add(self, item: W) -> None:
        """Give ``item`` its place in the order (after every item added before it); ``wait`` next."""
        with self._lock:
            self._pending.append(item)

    def take_arrived(self) -> list[W]:
        """For ``commit`` only: the items added since its group was taken, which then join that group
        (after it, in the order they were added; ``commit`` marks them done like the others). A
        committer that first waits for a lock shared with other processes takes them once it holds
        it: what arrived while the other process committed shares this round of flushes instead of
        waiting for the next one."""
        with self._lock:
            arrived, self._pending = self._pending, []
        return arrived

    def wait(self, item: W) -> None:
        """Return once ``item`` (added) is committed or failed, leading a group if no one else is."""
        with self._lock:
            if item.done:
                return
            if not self._leader_active:
                self._leader_active = item.lead = True
        while not item.lead:
            item.wakeup.wait()
            if item.done:
                return
        with self._lock:
            group, self._pending = self._pending, []
        try:
            self._commit(group)
        finally:
            with self._lock:
                successor = self._pending[0] if self._pending else None
                if successor is None:
                    self._leader_active = False
                else:
                    successor.lead = True
            if successor is not None:
                successor.wakeup.set()
