"""Opening a SQLite database that several processes share, in WAL mode, without racing each other.

``tenantctl serve --processes N`` starts its processes at once, and each opens the service's SQLite
files. Switching a new database to WAL takes an exclusive lock, and SQLite answers "database is
locked" at once to a connection that asks for it while another holds a lock (its busy handler does
not wait there), so one process out of a few hundred starts died with a traceback. Here a database
already in WAL is left as it is (reading the mode takes no lock), and the switch is retried until the
connection's timeout.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def connect_shared(path: Path, *, timeout: float = 30.0) -> sqlite3.Connection:
    """An autocommit connection to ``path`` in WAL mode, usable from several threads (the caller
    serialises them), waiting up to ``timeout`` seconds on locks."""
    database = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if str(database.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                database.execute("PRAGMA journal_mode=WAL")
            return database
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                database.close()
                raise
            time.sleep(0.01)
