"""A job the service runs at start (or, ``delay``, one interval after) and then every ``interval``
seconds, in a daemon thread.

A run's failure is logged by its type only (its text may hold a secret or a URL with a credential)
and the next run retries; ``stop`` wakes the thread and waits for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("tenancy.service")


class Periodic:
    def __init__(
        self, run: Callable[[], object], *, interval: float, name: str, what: str, delay: bool = False
    ) -> None:
        """``name``: the thread's; ``what``: the job, as the log names it ("the key grace sweep")."""
        self.interval = interval
        self._delay = delay
        self._run_once = run
        self._name = name
        self._what = what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def stopping(self) -> bool:
        """Whether ``stop`` was called: a long run checks it between steps, and ends early."""
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        if self._delay:
            self._stop.wait(self.interval)
        while not self._stop.is_set():
            try:
                self._run_once()
            except Exception as error:
                log.error("%s failed: %s", self._what, type(error).__name__)
            self._stop.wait(self.interval)
