"""The tenants repository survives what an OOM kill or a container stop does: ``kill -9`` of the whole
process group of ``tenantctl serve`` at random moments while clients write concurrently.

Each cycle starts the real server (its own process group, loopback only, API without workers so the
queue keeps every operation it was given), waits for readiness with no help, checks what it serves,
lets writers PATCH several tenants at once, and several writers one shared tenant (whose writes are
pipelined: the next builds on a change being flushed), and kills the group at a random instant (some
cycles before the server is even ready). Between cycles the test also leaves behind, on purpose, the worst
a crash of a git-index-based writer could leave: a changed and staged tenant file, a stray tenant
file and stale ``index.lock`` / ref locks. Counted over all cycles, and all must be 0: acknowledged
writes lost, uncommitted content served or queued, restarts that needed a hand.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tenancy.automation.contract import StackRef
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.service.core.config import ServiceSettings
from tenancy.service.core.local_issuer import mint_token
from tests.conftest import PROJECT_DIR
from tests.ports import free_port

CYCLES = 20
WRITERS = 5
SHARED = "shared"  # written by SHARED_WRITERS writers at once
SHARED_WRITERS = 3
READY_WITHIN_SECONDS = 30.0  # the bound for a restart without help (a loaded 2-core machine)
TENANT_URL = "/api/v1/environments/dev/tenants/{name}"
JUNK = "UNCOMMITTED-JUNK"


def tenantctl() -> str:
    found = Path(sys.executable).parent / "tenantctl"
    return str(found) if found.exists() else shutil.which("tenantctl") or "tenantctl"


def git(repo: Path, *args: str, check: bool = True) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout


@dataclass
class Tally:
    lost_acknowledged: int = 0
    uncommitted_served: int = 0
    uncommitted_queued: int = 0
    restarts_needing_a_hand: int = 0
    failed_writes: int = 0  # 5xx to a write: after a restart, writes must simply work
    acknowledged: dict[str, list[int]] = field(
        default_factory=dict
    )  # tenant -> acknowledged sequence numbers
    killed_before_ready: int = 0
    shared: set[str] = field(default_factory=set)  # displayName of each acknowledged write of SHARED


# A launcher imports the service once, then forks each server: the child makes itself a process
# group (setsid) and runs ``tenantctl serve``'s own command function, so a cycle costs the server's
# start-up, not the interpreter's imports (seconds on a loaded 2-core machine). The first and last
# starts run the real ``tenantctl serve`` executable.
LAUNCHER = """
import os, signal, sys
from pathlib import Path
import tenancy.service.app, tenancy.service.backends, tenancy.automation.pulumi_engine
import tenancy.automation.queue, tenancy.cli.serve, uvicorn
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
for line in sys.stdin:
    port, state_dir, project, log = line.split()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.dup2(out, 1); os.dup2(out, 2)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        try:
            tenancy.cli.serve.serve(host="127.0.0.1", port=int(port), state_dir=Path(state_dir),
                project=Path(project), repo=None, workers=0, log_level="warning")
        finally:
            os._exit(1)
    print(pid, flush=True)
"""


class Launcher:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def start(self, port: int, state_dir: Path, log: Path) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{port} {state_dir} {PROJECT_DIR} {log}\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(10)


class Server:
    def __init__(self, state_dir: Path, log: Path, env: dict[str, str], launcher: Launcher | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        if launcher is not None:
            self.pid = launcher.start(self.port, state_dir, log)
            return
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    tenantctl(),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--state-dir",
                    str(state_dir),
                    "--project",
                    str(PROJECT_DIR),
                    "--workers",
                    "0",
                    "--log-level",
                    "warning",
                ],
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,  # its own process group, as a container's processes are
            )
        self.pid = self.process.pid

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def ready(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        return False

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)
        else:
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.01)


def leave_crash_debris(repo: Path, cycle: int) -> None:
    """What a writer killed mid-commit through the index would leave behind."""
    target = repo / "tenants" / "dev" / "t0.yaml"
    if target.exists():
        document = yaml.safe_load(target.read_text())
        document["displayName"] = f"{JUNK}-{cycle}"
        target.write_text(yaml.safe_dump(document))
        git(repo, "add", "--", "tenants/dev/t0.yaml")
    (repo / "tenants" / "dev" / "ghost.yaml").write_text(
        f"name: ghost\nowners: [x@example.test]\nplan: small\ndisplayName: {JUNK}\n"
    )
    (repo / ".git" / "index.lock").write_text("")
    if cycle % 2:
        (repo / ".git" / "refs" / "heads" / "main.lock").write_text("")


def committed_display_name(repo: Path, tenant: str) -> str | None:
    text = git(repo, "show", f"refs/heads/main:tenants/dev/{tenant}.yaml", check=False)
    return yaml.safe_load(text)["displayName"] if text else None


def test_kill_minus_9_of_the_process_group_never_loses_or_leaks(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    repo = state_dir / "tenants-repo"
    log = tmp_path / "server.log"
    settings = ServiceSettings(state_dir=state_dir)
    tenants = [f"t{i}" for i in range(WRITERS)]
    tally = Tally(acknowledged={tenant: [] for tenant in tenants})
    sequence = {tenant: 0 for tenant in tenants}
    rng = random.Random(9)
    started = time.monotonic()
    env = {
        **os.environ,
        "TENANCY_SERVICE_RATE_LIMIT_REQUESTS": "1000000",
        "TENANCY_SERVICE_GIT_REFRESH_SECONDS": "3600",
    }
    launcher = Launcher(env)

    def token(index: int) -> str:
        return mint_token(
            settings.local_issuer_dir,
            issuer=settings.issuer,
            audience=settings.audience,
            subject=f"writer{index}",
            groups=[],
            roles=["platform-admin"],
            email=f"writer{index}@example.test",
        )

    for cycle in range(CYCLES):
        server = Server(state_dir, log, env, launcher if cycle else None)
        if cycle % 4 == 3:
            # Killed while starting (the start-up reconcile, the recovery of the checkout).
            time.sleep(rng.uniform(0.0, 0.4))
            tally.killed_before_ready += not server.ready(0.001)
            server.kill_group()
            server = Server(state_dir, log, env, launcher)
        if not server.ready(READY_WITHIN_SECONDS):
            tally.restarts_needing_a_hand += 1
            server.kill_group()
            break
        tokens = [token(i) for i in range(WRITERS + SHARED_WRITERS)]
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            for index, tenant in enumerate(tenants):
                headers = {"Authorization": f"Bearer {tokens[index]}"}
                read = client.get(TENANT_URL.format(name=tenant), headers=headers)
                if read.status_code == 200:
                    served = read.json()["spec"].get("displayName")
                    if JUNK in str(served) or served != committed_display_name(repo, tenant):
                        tally.uncommitted_served += 1
                elif cycle:
                    tally.uncommitted_served += read.status_code != 404
            ghost = client.get(
                TENANT_URL.format(name="ghost"), headers={"Authorization": f"Bearer {tokens[0]}"}
            )
            tally.uncommitted_served += ghost.status_code != 404

        stop = threading.Event()
        progressed = threading.Event()  # a write of this cycle to a tenant of its own was acknowledged

        def write(
            index: int, url: str, bearer: str, stop: threading.Event, progressed: threading.Event
        ) -> None:
            tenant = tenants[index]
            headers = {"Authorization": f"Bearer {bearer}"}
            with httpx.Client(base_url=url, timeout=10.0, headers=headers) as client:
                while not stop.is_set():
                    sequence[tenant] += 1
                    number = sequence[tenant]
                    body: dict[str, Any] = {"displayName": f"{tenant}-{number}"}
                    try:
                        if not tally.acknowledged[tenant]:  # create it (again: unacknowledged)
                            body |= {"owners": [f"writer{index}@example.test"], "plan": "small"}
                            response = client.put(TENANT_URL.format(name=tenant), json=body)
                        else:
                            response = client.patch(TENANT_URL.format(name=tenant), json=body)
                    except httpx.HTTPError:
                        return  # killed mid-request: not acknowledged
                    if response.status_code in (200, 201, 202):
                        tally.acknowledged[tenant].append(number)
                        progressed.set()
                    elif response.status_code >= 500:
                        tally.failed_writes += 1

        def write_shared(index: int, url: str, bearer: str, stop: threading.Event) -> None:
            headers = {"Authorization": f"Bearer {bearer}"}
            with httpx.Client(base_url=url, timeout=10.0, headers=headers) as client:
                while not stop.is_set():
                    sequence[f"writer{index}"] = number = sequence.get(f"writer{index}", 0) + 1
                    name = f"{SHARED}-{index}-{number}"
                    try:
                        response = client.patch(TENANT_URL.format(name=SHARED), json={"displayName": name})
                        if response.status_code == 404:  # create it (again: unacknowledged)
                            body = {"displayName": name, "owners": ["x@example.test"], "plan": "small"}
                            response = client.put(TENANT_URL.format(name=SHARED), json=body)
                    except httpx.HTTPError:
                        return  # killed mid-request: not acknowledged
                    if response.status_code in (200, 201, 202):
                        tally.shared.add(name)
                    elif response.status_code >= 500:
                        tally.failed_writes += 1

        writers = [
            threading.Thread(target=write, args=(i, server.url, tokens[i], stop, progressed))
            for i in range(WRITERS)
        ] + [
            threading.Thread(target=write_shared, args=(i, server.url, tokens[i], stop))
            for i in range(WRITERS, WRITERS + SHARED_WRITERS)
        ]
        for thread in writers:
            thread.start()
        if cycle % 2:
            # Every other cycle the kill's moment counts from the first acknowledged write (bounded), so
            # on a slow, loaded machine the writers still get writes through (the count checked below)
            # while the kill still lands at a random point of the writing; the other cycles count from
            # the start, so a kill also lands before anything was acknowledged.
            progressed.wait(READY_WITHIN_SECONDS)
        time.sleep(rng.uniform(0.1, 0.8))
        server.kill_group()
        stop.set()
        for thread in writers:
            thread.join(15)
        leave_crash_debris(repo, cycle)

    # Recovery once more, then count over the whole history.
    launcher.close()
    server = Server(state_dir, log, env, None)
    ready = server.ready(READY_WITHIN_SECONDS)
    tally.restarts_needing_a_hand += not ready
    server.kill_group()
    for tenant in tenants:
        written = set()
        for sha in git(
            repo, "log", "--format=%H", "refs/heads/main", "--", f"tenants/dev/{tenant}.yaml"
        ).split():
            document = yaml.safe_load(git(repo, "show", f"{sha}:tenants/dev/{tenant}.yaml"))
            assert JUNK not in str(document["displayName"]), "crash debris folded into a commit"
            written.add(int(str(document["displayName"]).rsplit("-", 1)[1]))
            author = git(repo, "log", "-1", "--format=%ae", sha).strip()
            assert author == f"writer{tenants.index(tenant)}@example.test"  # never under another's name
            changed = git(repo, "show", "--name-only", "--format=", sha).split()
            assert changed == [f"tenants/dev/{tenant}.yaml"]  # one change per commit
        tally.lost_acknowledged += len(set(tally.acknowledged[tenant]) - written)
    # The shared tenant: every acknowledged write is a commit under its writer, one change each.
    shared_commits: list[str] = []  # displayName at each commit of its file, oldest first
    for sha in git(
        repo, "log", "--reverse", "--format=%H", "refs/heads/main", "--", f"tenants/dev/{SHARED}.yaml"
    ).split():
        document = yaml.safe_load(git(repo, "show", f"{sha}:tenants/dev/{SHARED}.yaml"))
        name = str(document["displayName"])
        shared_commits.append(name)
        author = git(repo, "log", "-1", "--format=%ae", sha).strip()
        assert author == f"writer{name.split('-')[1]}@example.test"
        assert git(repo, "show", "--name-only", "--format=", sha).split() == [f"tenants/dev/{SHARED}.yaml"]
    tally.lost_acknowledged += len(tally.shared - set(shared_commits))
    assert "ghost.yaml" not in git(repo, "ls-tree", "-r", "--name-only", "refs/heads/main")
    queue = SqliteOperationQueue(state_dir / "operations.sqlite3")
    try:
        for tenant in [*tenants, "ghost"]:
            for operation in queue.recent(stack=StackRef("dev", tenant), limit=100_000):
                tally.uncommitted_queued += JUNK in str(operation.spec) or tenant == "ghost"
        # The shared tenant's operations are queued in commit order, each with a committed spec.
        positions = [
            shared_commits.index(str((operation.spec or {}).get("displayName")))
            for operation in reversed(queue.recent(stack=StackRef("dev", SHARED), limit=100_000))
        ]
        assert positions == sorted(positions), positions
    finally:
        queue.close()
    assert git(repo, "status", "--porcelain") == ""  # the working copy is the last commit again

    print(
        f"\ncrash safety: {CYCLES} kills ({tally.killed_before_ready} before ready) in "
        f"{time.monotonic() - started:.1f} s; acknowledged writes "
        f"{sum(len(v) for v in tally.acknowledged.values())} (+{len(tally.shared)} of one tenant); "
        f"lost {tally.lost_acknowledged}; "
        f"uncommitted served {tally.uncommitted_served}; uncommitted queued {tally.uncommitted_queued}; "
        f"restarts needing a hand {tally.restarts_needing_a_hand}"
    )
    assert sum(len(v) for v in tally.acknowledged.values()) >= 10  # the writers really wrote
    assert len(tally.shared) >= 3  # and one tenant by several at once
    assert (
        tally.lost_acknowledged,
        tally.uncommitted_served,
        tally.uncommitted_queued,
        tally.restarts_needing_a_hand,
        tally.failed_writes,
    ) == (0, 0, 0, 0, 0), log.read_text()[-3000:]
