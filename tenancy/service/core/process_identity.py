"""Telling whether a process that reserved something has ended, from another process.

A record naming its process by pid alone is not enough: pids are reused, and a container sees only
its own pid namespace (another container's pid 7 is not this one's). So a process is named by the
kernel's boot id, its pid namespace, its pid and its start time (``/proc/<pid>/stat``). Another
process can tell that one *ended* only when it runs on the same machine since the same boot, in the
same pid namespace, and no process with that pid and start time is there. In every other case
(another machine or container, no ``/proc``, a record from before names were kept) it cannot tell,
and the caller falls back to waiting (a lease's expiry).
"""

from __future__ import annotations

import os
from functools import cache


def process_identity() -> str:
    """This process's name, as ``process_ended`` reads it ("" where /proc does not tell)."""
    return _identity_of(os.getpid())


@cache
def _identity_of(pid: int) -> str:  # per pid: a forked child computes its own
    machine = _machine()
    started = _start_time(pid)
    if not machine or started is None:
        return ""
    return f"{machine}:{pid}:{started}"


def process_ended(identity: str | None) -> bool:
    """Whether the process ``identity`` names is known to have ended (see the module docstring)."""
    if not identity:
        return False
    parts = identity.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    machine, pid, started = parts[0], int(parts[1]), parts[2]
    if machine != _machine() or not machine:
        return False  # another machine, boot or pid namespace: it cannot be looked up from here
    # Only on positive evidence: /proc may hide other users' processes (hidepid, ProtectProc), so a
    # stat that cannot be read says nothing.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True  # no such process
    except PermissionError:
        pass  # there is one (another user's)
    except OSError:
        return False
    now = _start_time(pid)
    return now is not None and now != started  # its pid is another process's now


@cache
def _machine() -> str:
    """The boot id and the pid namespace of this process ("" where /proc does not tell)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of its stat), None without one."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command, which may hold spaces
    return fields[19] if len(fields) > 19 else None
