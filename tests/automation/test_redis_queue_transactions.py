"""The Redis queue's optimistic transactions (WATCH/MULTI/EXEC) where fakeredis alone hides what goes
wrong: an EXEC that Redis ran but whose reply the client lost (a timeout, a reset, a failover right
after it; redis-py then reports a WatchError, and the queue tries again). Each write must recognise
that its first try went in, not decide again on a state that already holds it. The conformance suite
(test_queue_conformance.py) checks that both backends otherwise behave alike.

Most tests lose a reply in-process (the EXEC runs, then the client raises what redis-py raises); one
loses it on the wire, through a proxy in front of a real ``redis-server`` (skipped without one)."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis as redis_py
from redis.client import Pipeline
from redis.exceptions import WatchError

from tenancy.automation.contract import (
    OperationKind,
    OperationStatus,
    OperationSummary,
    StackRef,
    SubmitRequest,
)
from tenancy.automation.redis_queue import RedisOperationQueue
from tests.ports import free_port

ACME = StackRef("dev", "acme")
BETA = StackRef("dev", "beta")


class LostReplies:
    """Armed ``n`` times: the next ``n`` EXECs run on the server, then the client reports what redis-py
    reports when the reply is lost while it watches keys."""

    def __init__(self) -> None:
        self.armed = 0
        self.lost = 0
        self.meanwhile: list[Callable[[], object]] = []  # what other clients do before the retry


@pytest.fixture
def lost_replies(monkeypatch: pytest.MonkeyPatch) -> LostReplies:
    replies = LostReplies()
    execute = Pipeline.execute

    def execute_then_lose_the_reply(self: Pipeline, raise_on_error: bool = True) -> list[Any]:
        transaction = self.explicit_transaction  # MULTI was sent: this execute sends EXEC
        result = execute(self, raise_on_error)
        if transaction and replies.armed:
            replies.armed -= 1
            replies.lost += 1
            while replies.meanwhile:
                replies.meanwhile.pop(0)()
            raise WatchError("A ConnectionError occurred while watching one or more keys")
        return result

    monkeypatch.setattr(Pipeline, "execute", execute_then_lose_the_reply)
    return replies


@pytest.fixture
def queue() -> RedisOperationQueue:
    return RedisOperationQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()), prefix="t:")


def running_marker(queue: RedisOperationQueue, stack: StackRef) -> str | None:
    value = queue._redis.hget("t:running", stack.name)
    return value.decode() if isinstance(value, bytes) else value


# --- submits --------------------------------------------------------------------------------------


def test_a_submit_whose_reply_was_lost_is_not_written_again_over_what_came_after_it(
    queue: RedisOperationQueue, lost_replies: LostReplies
) -> None:
    """Between the lost reply and the retry, a later up of the stack superseded the call's operation.
    A retry that plans again writes the operation again, "queued", over its superseded record: two
    ups queued, the older spec running first, and a queued operation pointing at its successor."""
    later: list[str] = []
    lost_replies.armed = 1
    lost_replies.meanwhile.append(
        lambda: later.append(queue.submit(ACME, OperationKind.up, spec={"n": 2}, requested_by="b").id)
    )

    [first] = queue.submit_in_order([SubmitRequest(ACME, OperationKind.up, {"n": 1}, "a")])

    assert lost_replies.lost == 1 and first.status is OperationStatus.queued  # as it was when queued
    stored = queue.get(first.id)
    assert stored is not None and stored.status is OperationStatus.superseded
    assert stored.superseded_by == later[0]
    assert [op.id for op in queue.active(ACME)] == later


# --- claims ----------------------------------------------------------------------------------------


def test_a_claim_whose_reply_was_lost_returns_the_operation_it_claimed(
    queue: RedisOperationQueue, lost_replies: LostReplies
) -> None:
    """The retry decided again: the first operation stayed running, claimed by the worker, which never
    heard of it (nobody ran it until a stale-heartbeat requeue), and the retry claimed the next
    stack's operation instead (or nothing)."""
    first = queue.submit(ACME, OperationKind.up, spec={"n": 1}, requested_by="a")
    other = queue.submit(BETA, OperationKind.up, spec={"n": 2}, requested_by="a")
    lost_replies.armed = 1

    claimed = queue.claim_next(worker_id="w")

    assert lost_replies.lost == 1
    assert claimed is not None and claimed.id == first.id and claimed.status is OperationStatus.running
    waiting = queue.get(other.id)
    assert waiting is not None and waiting.status is OperationStatus.queued
    assert running_marker(queue, ACME) == first.id and running_marker(queue, BETA) is None
    # The worker runs it to the end: the outcome is recorded, the stack freed.
    done = queue.finish(first.id, OperationStatus.succeeded, OperationSummary(), worker_id="w")
    assert done.status is OperationStatus.succeeded and running_marker(queue, ACME) is None


def test_a_claim_whose_reply_was_lost_on_the_only_queued_operation_does_not_answer_nothing(
    queue: RedisOperationQueue, lost_replies: LostReplies
) -> None:
    only = queue.submit(ACME, OperationKind.up, spec={"n": 1}, requested_by="a")
    lost_replies.armed = 1
    claimed = queue.claim_next(worker_id="w")
    assert claimed is not None and claimed.id == only.id
    assert queue.claim_next(worker_id="w") is None  # and the stack is not claimable twice


# --- finish, hand back, abandon --------------------------------------------------------------------


def test_a_finish_whose_reply_was_lost_is_recorded_once_and_not_reported_as_lost(
    queue: RedisOperationQueue, lost_replies: LostReplies, caplog: pytest.LogCaptureFixture
) -> None:
    """The retry found the operation finished and logged that it "was no longer running here; outcome
    not recorded", though the outcome was the one it had just recorded."""
    operation = queue.submit(ACME, OperationKind.up, spec={"n": 1}, requested_by="a")
    queue.claim_next(worker_id="w")
    lost_replies.armed = 1

    with caplog.at_level(logging.WARNING, logger="tenancy.automation.redis_queue"):
        done = queue.finish(
            operation.id, OperationStatus.failed, OperationSummary(error="boom"), worker_id="w"
        )

    assert lost_replies.lost == 1
    assert done.status is OperationStatus.failed and done.summary == OperationSummary(error="boom")
    assert "outcome not recorded" not in caplog.text
    assert running_marker(queue, ACME) is None


def test_a_hand_back_whose_reply_was_lost_names_what_it_requeued(
    queue: RedisOperationQueue, lost_replies: LostReplies
) -> None:
    """The retry found nothing running and answered an empty list ("0 operations handed back")."""
    operation = queue.submit(ACME, OperationKind.up, spec={"n": 1}, requested_by="a")
    queue.claim_next(worker_id="w")
    lost_replies.armed = 1

    handed_back = queue.requeue_claimed("w", reason="stopping")

    assert lost_replies.lost == 1
    assert [op.id for op in handed_back] == [operation.id]
    assert handed_back[0].status is OperationStatus.queued
    # Once, and recorded as handed back before Pulumi started (it never did).
    assert [event.status for event in queue.events(operation.id)] == ["handed_back"]


def test_an_abandon_whose_reply_was_lost_names_what_it_failed(
    queue: RedisOperationQueue, lost_replies: LostReplies
) -> None:
    operation = queue.submit(ACME, OperationKind.up, spec={"n": 1}, requested_by="a")
    queue.claim_next(worker_id="w")
    lost_replies.armed = 1

    abandoned = queue.abandon("w", reason="interrupted")

    assert lost_replies.lost == 1
    assert [op.id for op in abandoned] == [operation.id]
    assert abandoned[0].status is OperationStatus.failed


def test_a_retry_after_a_real_conflict_still_decides_again(queue: RedisOperationQueue) -> None:
    """Only this call's own EXEC counts as done: a retry after another client's write (a true WatchError,
    no EXEC of ours ran) plans on what Redis holds now."""
    first = queue.submit(ACME, OperationKind.up, spec={"n": 1}, requested_by="a")
    transaction = queue._transaction
    interfered: list[bool] = []

    def another_claim_first(watched: list[str], body: Any) -> Any:
        def interfering(pipe: Any) -> Any:
            if not interfered:
                interfered.append(True)
                other = RedisOperationQueue(queue._redis, prefix="t:")
                assert other.claim_next(worker_id="other") is not None  # changes what is watched
            return body(pipe)

        return transaction(watched, interfering)

    queue._transaction = another_claim_first  # type: ignore[method-assign]
    assert queue.claim_next(worker_id="w") is None  # the other claimer has the only operation
    queue._transaction = transaction  # type: ignore[method-assign]
    stored = queue.get(first.id)
    assert interfered and stored is not None and stored.status is OperationStatus.running


# --- on the wire -----------------------------------------------------------------------------------


class _LossyProxy:
    """127.0.0.1 -> the real server; ``arm()``: the next EXEC reaches Redis, which runs it, and the
    connection is then closed before its reply can reach the client."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.lost = 0
        self.closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            dropping = threading.Event()
            threading.Thread(target=self._up, args=(client, server, dropping), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, dropping), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, dropping: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                if b"\r\nEXEC\r\n" in data and self.armed.is_set():
                    self.armed.clear()
                    dropping.set()  # no byte of the reply goes back
                    server.sendall(data)
                    time.sleep(0.2)  # Redis runs it
                    self.lost += 1
                    client.close()
                    server.close()
                    return
                server.sendall(data)
        except OSError:
            pass

    def _down(self, server: socket.socket, client: socket.socket, dropping: threading.Event) -> None:
        try:
            while data := server.recv(65536):
                if dropping.is_set():
                    return
                client.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.closing.set()
        self.listener.close()


@pytest.fixture
def real_redis_port() -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="redis-queue-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis_py.Redis(port=port, socket_timeout=1).ping():
                    break
            except redis_py.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(Path(workdir), ignore_errors=True)


def test_on_a_real_redis_a_claim_whose_reply_was_lost_returns_what_it_claimed(real_redis_port: int) -> None:
    proxy = _LossyProxy(real_redis_port)
    try:
        client = redis_py.Redis(port=proxy.port, socket_timeout=5.0)
        queue = RedisOperationQueue(client, prefix="t:")
        first = queue.submit(ACME, OperationKind.up, spec={"n": 1}, requested_by="a")
        other = queue.submit(BETA, OperationKind.up, spec={"n": 2}, requested_by="a")
        proxy.armed.set()

        claimed = queue.claim_next(worker_id="w")

        assert proxy.lost == 1
        assert claimed is not None and claimed.id == first.id
        direct = redis_py.Redis(port=real_redis_port, decode_responses=True)
        assert direct.hgetall("t:running") == {ACME.name: first.id}
        waiting = queue.get(other.id)
        assert waiting is not None and waiting.status is OperationStatus.queued
        client.close()
    finally:
        proxy.close()


# --- round trips -----------------------------------------------------------------------------------


def test_a_group_submit_reads_in_a_few_round_trips_whatever_its_size(queue: RedisOperationQueue) -> None:
    """Every read after WATCH was a round trip of its own (one per stack, per queued operation, per
    superseded one): 53 for 10 ups with 3 operations queued on each stack. The longer the reads, the
    likelier another client aborts the EXEC. INCRBY, WATCH, two batches of reads, MULTI/EXEC."""
    from redis.connection import AbstractConnection

    stacks = [StackRef("dev", f"t{i}") for i in range(10)]
    for stack in stacks:
        for kind in (OperationKind.up, OperationKind.destroy, OperationKind.up):
            queue.submit(stack, kind, spec={}, requested_by="a")
    queue.submit_in_order([SubmitRequest(StackRef("dev", "warm"), OperationKind.up, {}, "a")])
    sent: list[bytes] = []
    send = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent.append(b"")
        send(self, command, check_health)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AbstractConnection, "send_packed_command", counting)
        group = queue.submit_in_order(
            [SubmitRequest(stack, OperationKind.up, {"v": 2}, "a") for stack in stacks]
        )

    assert len(sent) <= 5, len(sent)
    for stack, operation in zip(stacks, group, strict=True):
        active = queue.active(stack)  # the older up superseded by the group's; the destroy still ahead
        assert [op.kind for op in active] == [OperationKind.up, OperationKind.destroy, OperationKind.up]
        assert active[-1].id == operation.id


def test_a_claim_is_not_aborted_by_a_submit_to_another_stack(queue: RedisOperationQueue) -> None:
    """A claim watched the overall queued set, which every submit writes: any submit on any stack during
    its reads aborted it, and a burst of submits (faster now that a group reads in two round trips)
    starved the worker. It watches what decides: ``running`` and the claimed stack's queued set."""
    first = queue.submit(ACME, OperationKind.up, spec={"n": 1}, requested_by="a")
    stacks_of = queue._stacks_of
    runs: list[int] = []

    def a_submit_meanwhile(ids: list[str]) -> dict[str, str]:
        runs.append(1)
        if len(runs) == 1:
            queue.submit(BETA, OperationKind.up, spec={"n": 2}, requested_by="b")
        return stacks_of(ids)

    queue._stacks_of = a_submit_meanwhile  # type: ignore[method-assign]
    claimed = queue.claim_next(worker_id="w")
    assert claimed is not None and claimed.id == first.id
    assert len(runs) == 1  # decided once


def test_a_claim_takes_the_oldest_queued_operation_of_its_stack_as_it_is_when_claimed(
    queue: RedisOperationQueue,
) -> None:
    """What the overall queued set said may be out of date by then (unwatched): the stack's own queued
    set, watched, says which operation is next on it."""
    first = queue.submit(ACME, OperationKind.up, spec={"n": 1}, requested_by="a")
    stacks_of = queue._stacks_of
    newer: list[str] = []

    def superseded_meanwhile(ids: list[str]) -> dict[str, str]:
        if not newer:
            newer.append(queue.submit(ACME, OperationKind.up, spec={"n": 2}, requested_by="b").id)
        return stacks_of(ids)

    queue._stacks_of = superseded_meanwhile  # type: ignore[method-assign]
    claimed = queue.claim_next(worker_id="w")
    assert claimed is not None and claimed.id == newer[0] and claimed.spec == {"n": 2}
    replaced = queue.get(first.id)
    assert replaced is not None and replaced.status is OperationStatus.superseded


# --- bounded retries -------------------------------------------------------------------------------


def test_a_transaction_other_clients_keep_winning_gives_up_as_a_store_timeout(
    queue: RedisOperationQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retries went on without end, holding the group's writers. They stop after WATCH_TRIES (or
    WATCH_SECONDS), with nothing written, as the shared store timing out: the service answers that
    503 (service_unavailable with Retry-After; a write's submit says engine_unavailable)."""
    from tenancy.automation import redis_queue
    from tenancy.service.core.errors import unexpected_answer

    monkeypatch.setattr(redis_queue, "WATCH_TRIES", 5)
    other = RedisOperationQueue(queue._redis, prefix="t:")
    stacks_of = queue._stacks_of
    tries: list[int] = []

    def another_client_wins(ids: list[str]) -> dict[str, str]:
        tries.append(1)
        if len(tries) > 50:
            pytest.fail("the claim kept retrying")  # keeps this test bounded without the bound
        # Another worker claims and finishes on another stack: ``running``, watched, changes.
        beta = other.submit(BETA, OperationKind.refresh, spec=None, requested_by="b")
        assert other.claim_next(worker_id="o", only=[beta.id]) is not None
        other.finish(beta.id, OperationStatus.succeeded, OperationSummary(), worker_id="o")
        return stacks_of(ids)

    queue.submit(ACME, OperationKind.up, spec={"n": 1}, requested_by="a")  # claimed next, never by this one
    claimer = RedisOperationQueue(queue._redis, prefix="t:")
    monkeypatch.setattr(claimer, "_stacks_of", another_client_wins)
    with pytest.raises(redis_queue.QueueContended) as raised:
        claimer.claim_next(worker_id="w")
    assert len(tries) == 5
    assert "after 5 tries" in str(raised.value) and "t:running" in str(raised.value)
    assert running_marker(queue, ACME) is None  # nothing written
    status, body, headers = unexpected_answer(raised.value, "rid", "POST", "/x")
    assert status == 503 and body["error"]["code"] == "service_unavailable" and "Retry-After" in headers


def test_giving_up_after_a_last_try_whose_reply_was_lost_answers_what_it_did(
    queue: RedisOperationQueue, lost_replies: LostReplies, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tenancy.automation import redis_queue

    monkeypatch.setattr(redis_queue, "WATCH_TRIES", 1)
    operation = queue.submit(ACME, OperationKind.up, spec={"n": 1}, requested_by="a")
    lost_replies.armed = 1
    claimed = queue.claim_next(worker_id="w")
    assert claimed is not None and claimed.id == operation.id
