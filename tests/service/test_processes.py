"""``tenantctl serve --processes N``: several server processes on one socket and one state directory
behave as one service: every write committed under its author and queued, rate limits and preview
bounds counted once for all, a process that dies replaced and its possible half-write reconciled,
SIGTERM and a ``kill -9`` of the supervisor alone stopping them all. Real processes, loopback only,
bounded waits; the pieces they share are tested one by one below the end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenancy.automation.contract import OperationKind, StackRef
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.service.core import git_locks
from tenancy.service.core.api_keys import SqliteApiKeyStore
from tenancy.service.core.change_requests import SqliteChangeRequestStore
from tenancy.service.core.config import ServiceSettings
from tenancy.service.core.errors import ServiceError
from tenancy.service.core.idempotency import SqliteIdempotencyStore
from tenancy.service.core.local_issuer import mint_token
from tenancy.service.core.preview import PreviewGate
from tenancy.service.core.processes import ProcessShare, claim_share
from tenancy.service.core.rate_limit import SharedRateLimiter
from tenancy.service.core.tenants_repo import GitAuthor, TenantRepository
from tenancy.service.portal.sessions import SqliteStore
from tenancy.writer_turns import WriterTurns
from tests.conftest import PROJECT_DIR
from tests.ports import free_port
from tests.service.test_crash_safety import git, tenantctl

WITHIN_SECONDS = 60.0  # bound for starts and stops of real processes on a loaded 2-core machine
TENANT_URL = "/api/v1/environments/dev/tenants/{name}"


class Service:
    """``tenantctl serve --processes 2`` in its own process group."""

    def __init__(self, state_dir: Path, log: Path, **environment: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        env = {**os.environ, "TENANCY_SERVICE_GIT_REFRESH_SECONDS": "3600", **environment}
        with log.open("ab") as out:
            command = [tenantctl(), "serve", "--port", str(self.port), "--state-dir", str(state_dir)]
            command += ["--project", str(PROJECT_DIR), "--workers", "0", "--processes", "2"]
            self.process = subprocess.Popen(
                [*command, "--log-level", "warning"],
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,
            )

    def children(self) -> list[int]:
        """The server processes (not multiprocessing's resource tracker)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
                if int(stat[1]) == self.process.pid and b"resource_tracker" not in command:
                    found.append(int(entry))
        return sorted(found)

    def ready(self) -> None:
        """Both processes answer (each reports its share once its app is built)."""
        deadline = time.monotonic() + WITHIN_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "tenantctl serve exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200 and self._shares() == 2:
                    return
            time.sleep(0.05)
        raise AssertionError("the service did not become ready")

    def _shares(self) -> int:
        """Processes that hold their share (the file lock is taken before the app is built)."""
        held = 0
        for path in (self.state_dir / "processes").glob(f"{self.process.pid}-*.lock"):
            descriptor = os.open(path, os.O_RDONLY)
            try:
                import fcntl

                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held += 1
            finally:
                os.close(descriptor)
        return held

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(WITHIN_SECONDS)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    started = Service(tmp_path / "state", tmp_path / "server.log", TENANCY_SERVICE_RATE_LIMIT_REQUESTS="30")
    try:
        started.ready()
        yield started
    finally:
        started.stop()


def _token(settings: ServiceSettings, who: str) -> str:
    return mint_token(
        settings.local_issuer_dir,
        issuer=settings.issuer,
        audience=settings.audience,
        subject=who,
        groups=[],
        roles=["platform-admin"],
        email=f"{who}@example.test",
    )


def _gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + WITHIN_SECONDS
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            with contextlib.suppress(OSError):
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    alive.append(pid)
        if not alive:
            return True
        time.sleep(0.05)
    return False


def test_two_processes_commit_every_write_under_its_author_and_share_one_rate_limit(
    service: Service,
) -> None:
    settings = ServiceSettings(state_dir=service.state_dir)
    repo = settings.tenants_repo
    writers = 8

    def write(index: int) -> list[str]:
        who = f"writer{index}"
        headers = {"Authorization": f"Bearer {_token(settings, who)}"}
        operations = []
        with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
            created = client.put(
                TENANT_URL.format(name=f"p{index}"),
                json={"owners": [f"{who}@example.test"], "plan": "small", "displayName": "0"},
            )
            assert created.status_code == 202, created.text
            operations.append(created.json()["operation"]["id"])
            for number in (1, 2):
                patched = client.patch(TENANT_URL.format(name=f"p{index}"), json={"displayName": str(number)})
                assert patched.status_code == 202, patched.text
                operations.append(patched.json()["operation"]["id"])
        return operations

    with ThreadPoolExecutor(writers) as pool:
        acknowledged = list(pool.map(write, range(writers)))

    queue = SqliteOperationQueue(settings.state_dir / "operations.sqlite3")
    try:
        for index, operations in enumerate(acknowledged):
            path = f"tenants/dev/p{index}.yaml"
            log = git(repo, "log", "--format=%ae %H", "refs/heads/main", "--", path).split("\n")
            commits = [line.split() for line in log if line]
            assert [author for author, _ in commits] == [f"writer{index}@example.test"] * 3
            for _, sha in commits:  # one change per commit
                assert git(repo, "show", "--name-only", "--format=", sha).split() == [path]
            assert "displayName: '2'" in git(repo, "show", f"refs/heads/main:{path}")
            for operation in operations:
                assert queue.get(operation) is not None
    finally:
        queue.close()

    # One principal, 40 requests each on a new connection (so the kernel hands them to either
    # process): 30 pass in the window, whichever process answered them. The window is fixed (counts
    # restart at each multiple of its length), so the burst starts where it cannot cross into the next.
    window = settings.rate_limit_window_seconds
    left = window - time.time() % window
    if left < 20:
        time.sleep(left + 0.5)
    headers = {"Authorization": f"Bearer {_token(settings, 'burst')}", "Connection": "close"}
    statuses = [
        httpx.get(f"{service.url}{TENANT_URL.format(name='p0')}", headers=headers, timeout=30).status_code
        for _ in range(40)
    ]
    assert statuses.count(200) == 30 and statuses.count(429) == 10, statuses


def test_a_process_that_dies_is_replaced_and_reconciles_what_it_may_have_left(service: Service) -> None:
    """A process killed between its commit and its submit leaves a change in git with no update
    queued: the process uvicorn starts in its place queues it (as a start of the whole service does),
    then SIGTERM stops every process and removes the service's share files."""
    settings = ServiceSettings(state_dir=service.state_dir)
    repo = settings.tenants_repo
    headers = {"Authorization": f"Bearer {_token(settings, 'someone')}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
        created = client.put(
            TENANT_URL.format(name="halfway"),
            json={"owners": ["someone@example.test"], "plan": "small", "displayName": "before"},
        )
        assert created.status_code == 202, created.text
    # The half of a write that reached git: a commit of the file, as the service makes them.
    writer = TenantRepository(repo)
    writer.ensure()
    with writer.locked("dev.halfway"):
        document = writer.read("dev", "halfway")
        assert document is not None
        writer.write(
            "dev",
            "halfway",
            {**document, "displayName": "committed, never queued"},
            author=GitAuthor("someone", "someone@example.test"),
            message="a change whose submit never ran",
        )

    before = service.children()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    queue = SqliteOperationQueue(settings.state_dir / "operations.sqlite3")
    try:
        deadline = time.monotonic() + WITHIN_SECONDS
        while True:
            ups = [
                operation
                for operation in queue.recent(stack=StackRef("dev", "halfway"))
                if operation.kind is OperationKind.up and operation.requested_by == "tenant-api:reconcile"
            ]
            if ups:
                break
            assert time.monotonic() < deadline, "the replacement did not reconcile"
            time.sleep(0.05)
        assert ups[0].spec is not None and ups[0].spec["displayName"] == "committed, never queued"
    finally:
        queue.close()
    after = service.children()
    assert before[0] not in after and before[1] in after

    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(WITHIN_SECONDS) == 0
    assert _gone(after)
    assert not list((service.state_dir / "processes").glob(f"{service.process.pid}-*"))


def test_a_supervisor_killed_alone_takes_its_processes_with_it(service: Service) -> None:
    children = service.children()
    assert len(children) == 2
    os.kill(service.process.pid, signal.SIGKILL)  # the supervisor only, not its group
    service.process.wait(WITHIN_SECONDS)
    assert _gone(children)  # each got SIGTERM from the kernel and shut down


# --- what the processes share, one piece at a time ----------------------------------------------------

HOLD = """
import sys, fcntl, os
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(descriptor, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def held_by_another_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield holder
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(WITHIN_SECONDS)


def test_queue_writers_wait_for_another_process_s_turn_on_a_lock_not_in_sqlite(tmp_path: Path) -> None:
    queue = SqliteOperationQueue(tmp_path / "operations.sqlite3")
    submitted = threading.Event()

    def submit() -> None:
        queue.submit(StackRef("dev", "acme"), OperationKind.up, spec={}, requested_by="test")
        submitted.set()

    try:
        with held_by_another_process(WriterTurns(queue.path).path):
            thread = threading.Thread(target=submit)
            thread.start()
            assert not submitted.wait(0.5)  # waiting on the other process's turn, not failing
        thread.join(WITHIN_SECONDS)
        assert submitted.is_set() and len(queue.recent()) == 1
    finally:
        queue.close()


def test_rate_limits_count_once_for_every_process_sharing_the_table(tmp_path: Path) -> None:
    table = tmp_path / "rate-limits.table"
    here = SharedRateLimiter(table, limit=10, window_seconds=3600)
    hits = (
        "import sys\nfrom pathlib import Path\n"
        "from tenancy.service.core.rate_limit import SharedRateLimiter\n"
        "s = SharedRateLimiter(Path(sys.argv[1]), limit=10, window_seconds=3600); "
        "print(sum(s.hit('alice').allowed for _ in range(7)))"
    )
    counted = subprocess.run(
        [sys.executable, "-c", hits, str(table)],
        capture_output=True, text=True, check=True, cwd=PROJECT_DIR,
    ).stdout  # fmt: skip
    assert counted.strip() == "7"
    assert [here.hit("alice").allowed for _ in range(4)] == [True, True, True, False]
    assert here.peek("alice").remaining == 0 and here.peek("bob").remaining == 10
    here.close()


def test_a_full_rate_table_forgets_the_smallest_count_and_keeps_the_busy_principal(tmp_path: Path) -> None:
    limiter = SharedRateLimiter(tmp_path / "table", limit=5, window_seconds=3600, slots=4)
    for _ in range(6):
        limiter.hit("busy")
    for name in ("a", "b", "c"):
        limiter.hit(name)
    limiter.hit("newcomer")  # every slot holds a count of this window: the smallest is forgotten
    assert not limiter.peek("busy").allowed
    assert sum(limiter.peek(name).remaining == 4 for name in ("a", "b", "c", "newcomer")) == 3
    limiter.close()


def test_preview_bounds_hold_for_every_process_together(tmp_path: Path) -> None:
    import anyio

    slots = tmp_path / "preview-slots"
    gates = [PreviewGate(max_in_flight=2, max_per_principal=1, slots=slots) for _ in range(2)]

    async def scenario() -> None:
        async with gates[0].turn("alice"):
            with pytest.raises(ServiceError) as mine:
                async with gates[1].turn("alice"):
                    pass
            assert mine.value.code == "preview_busy"
            async with gates[1].turn("bob"):
                with pytest.raises(ServiceError):
                    async with gates[1].turn("carol"):  # two in flight in all
                        pass
        async with gates[1].turn("alice"):  # released with the first
            pass

    anyio.run(scenario)
    assert sorted(path.name for path in slots.iterdir()) == ["all-0.lock", "all-1.lock"]


def test_portal_sessions_and_idempotency_keys_are_shared_by_the_processes(tmp_path: Path) -> None:
    stores = [SqliteStore(tmp_path / "portal-sessions.sqlite3") for _ in range(2)]
    stores[0].put("session:x", {"token": "t"}, 60)
    assert stores[1].get("session:x") == {"token": "t"}
    assert stores[1].pop("session:x") == {"token": "t"} and stores[0].pop("session:x") is None
    assert (tmp_path / "portal-sessions.sqlite3").stat().st_mode & 0o077 == 0
    keys = [SqliteIdempotencyStore(tmp_path / "idempotency.sqlite3", ttl_seconds=60) for _ in range(2)]
    assert keys[0].begin("alice", "k1", "f") is None
    with pytest.raises(ServiceError):  # the same key in flight in another process
        keys[1].begin("alice", "k1", "f")
    for store in [*stores, *keys]:
        store.close()


def test_worker_threads_are_divided_and_share_zero_runs_what_runs_once(tmp_path: Path) -> None:
    assert [ProcessShare(index, 2).workers(5) for index in range(2)] == [3, 2]
    assert [ProcessShare(index, 3).workers(1) for index in range(3)] == [1, 0, 0]
    assert ProcessShare(0, 2).runs_singletons and not ProcessShare(1, 2).runs_singletons
    claim = "from pathlib import Path; import sys; from tenancy.service.core.processes import claim_share; "
    first = subprocess.run(
        [sys.executable, "-c", claim + "print(claim_share(Path(sys.argv[1]), 'g', 2))", str(tmp_path)],
        capture_output=True, text=True, check=True, cwd=PROJECT_DIR,
    ).stdout  # fmt: skip
    assert "index=0" in first and "restarted=False" in first
    again = claim_share(tmp_path, "g", 2)  # the first process is gone: its share is free, and marked
    assert again == ProcessShare(0, 2, restarted=True) and again.reconciles
    assert claim_share(tmp_path, "g", 2) == ProcessShare(1, 2) and not ProcessShare(1, 2).reconciles


def test_the_creation_cache_follows_commits_another_process_made_without_running_git(
    tmp_path: Path,
) -> None:
    ours, theirs = TenantRepository(tmp_path / "repo"), TenantRepository(tmp_path / "repo")
    ours.ensure()
    theirs.ensure()
    author = GitAuthor("someone", "someone@example.test")
    document = {"owners": ["someone@example.test"], "plan": "small"}
    ours.write("dev", "first", {**document, "name": "first"}, author=author, message="first")
    assert ours.creation("dev", "first") is not None
    made = theirs.write("dev", "second", {**document, "name": "second"}, author=author, message="second")
    theirs.write("dev", "first", {**document, "name": "first", "x": 1}, author=author, message="change")
    ran: list[tuple[str, ...]] = []
    original = ours._run

    def counted(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        ran.append(args)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    ours._run = counted  # type: ignore[method-assign]
    second = ours.creation("dev", "second")
    assert second is not None and second.sha == made
    assert ours.creation("dev", "first") == theirs.creation("dev", "first")
    assert ran == []


def test_stale_git_locks_are_cleared_while_other_service_processes_run(tmp_path: Path) -> None:
    """Another process of the service (it keeps the marker open) holds no git lock while the commit
    lock is held, so it never keeps a dead process's lock in place; any other process does."""
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    marker = repository.git_dir / git_locks.SERVICE_MARKER
    opens = (
        "import os, sys; [os.open(p, os.O_RDONLY) for p in sys.argv[1:]]; print('open', flush=True); input()"
    )

    def holders_with(*paths: Path) -> list[git_locks.LiveHolder]:
        process = subprocess.Popen(
            [sys.executable, "-c", opens, *map(str, paths)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, cwd=tmp_path,
        )  # fmt: skip
        try:
            assert process.stdout is not None and process.stdout.readline() == "open\n"
            return git_locks.live_holders(repository.root)
        finally:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(WITHIN_SECONDS)

    assert holders_with(marker, repository.git_dir / "HEAD") == []
    assert len(holders_with(repository.git_dir / "HEAD")) == 1


@pytest.mark.parametrize(
    "open_store",
    [
        lambda path: SqliteIdempotencyStore(path, ttl_seconds=60),
        lambda path: SqliteStore(path),
        lambda path: SqliteChangeRequestStore(path),
        lambda path: SqliteApiKeyStore(path),
        lambda path: SqliteOperationQueue(path),
    ],
    ids=["idempotency", "portal-sessions", "change-requests", "api-keys", "operations-queue"],
)
def test_a_store_opened_while_another_process_holds_its_database_waits_instead_of_dying(
    tmp_path: Path, open_store: Any
) -> None:
    """Seen starting `tenantctl serve --processes 2`: switching a new database to WAL while another
    process held a lock on it answered "database is locked" at once (SQLite's busy handler does not
    wait there), and that process died with a traceback. Now it waits for the lock."""
    import sqlite3

    path = tmp_path / "store.sqlite3"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE held (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO held VALUES (1)")
    opened: list[Any] = []

    def open_it() -> None:
        try:
            opened.append(open_store(path))
        except Exception as error:  # reported below
            opened.append(error)

    opener = threading.Thread(target=open_it)
    opener.start()
    time.sleep(0.3)  # it is waiting on the lock now, not failed
    assert opened == []
    other.execute("COMMIT")
    other.close()
    opener.join(10)
    [store] = opened
    assert not isinstance(store, Exception), store
    store.close()


def test_processes_starting_together_on_a_new_state_directory_all_open_the_api_key_store(
    tmp_path: Path,
) -> None:
    """Found running the benchmark with --processes 2: both processes found the API-key table without
    its incarnation column, and the second one's ALTER TABLE crashed it at start."""
    from tenancy.service.core.api_keys import SqliteApiKeyStore

    failures: list[BaseException] = []
    for attempt in range(20):
        path = tmp_path / f"keys-{attempt}.sqlite3"
        barrier = threading.Barrier(4)

        def open_store(path: Path = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                SqliteApiKeyStore(path)
            except BaseException as error:  # collected: a thread's exception is otherwise lost
                failures.append(error)

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
