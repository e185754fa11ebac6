"""The tenants git repository: the one module that talks to git.

Git is the source of truth for what each tenant asked for: every change through the API is a commit
of ``<tenants_path>/<env>/<name>.yaml`` authored by the caller (the service is only the committer),
so ``git log`` answers who changed what and when, and a pull request can make the same change.

Crash safety comes from never sharing a half-done state:

- Commits are built from objects (blob, trees, commit) with libgit2 (pygit2), never through the
  index or the working copy, and published by a compare-and-swap of the branch ref. A process killed
  at any instant leaves at most unreferenced objects: the branch names the last complete commit.
- Reads (GET, the start-up reconcile, incarnations) come from the commit the branch names, never from
  the working copy, so nothing uncommitted is ever served, queued or folded into a later commit.
- The working copy is only a view for people: it is brought to the branch's commit at start, after
  each group of commits and after every failed write.
- A git lock file left by a dead process is recognised and removed (``git_locks``); one a live
  process may hold is left alone and readiness reports it.

Throughput: callers lock per tenant; changes that arrive while a commit is being published are
committed together (group commit: one commit per change, one ref update and one push per group). A
tenant's writers in one process share groups too (``turn``, pipelined): the next builds on a change
that is being flushed, and is answered only once that change and its own are flushed.

With a remote, a group is pushed before the local branch moves: if the remote moved (another replica,
a merged pull request), the group is rebuilt on top of it, and a change whose file changed meanwhile
fails as a conflict. Reads refresh from the remote at most every ``refresh_seconds``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pygit2
import yaml
from pygit2.enums import CheckoutStrategy, DeltaStatus, FileMode

from tenancy.group_commit import GroupCommit
from tenancy.service.core import durable, git_locks, git_pack
from tenancy.spec.tenant import not_a_mapping
from tenancy.spec.text import forbidden_character, without_forbidden
from tenancy.spec.tree import ENVIRONMENTS
from tenancy.spec.yaml_dumping import dump_tenant_yaml
from tenancy.spec.yaml_loading import load_yaml, yaml_problem

COMMITTER_NAME = "tenant-api"
COMMITTER_EMAIL = "tenant-api@tenancy.invalid"
_GIT_TIMEOUT_SECONDS = 60
_PUSH_ATTEMPTS = 12
_PLAIN_TRAILER = re.compile(r"[A-Za-z-]+: [A-Za-z0-9-]+")  # what commit_naming may look for
_HEALTH_CACHE_SECONDS = 5.0  # /readyz is unauthenticated: at most one check per this interval
_PARSED_CACHE_ENTRIES = 20_000
_PACKS_BEFORE_MERGE = 32  # one pack per group of commits; lookups scan every pack
_CREATION_HEADS_KEPT = 4096
# A byte appended each time a service process's git gc or repack ran (it may have removed packs).
_PACKS_REMOVED = "tenant-api-packs-removed"
_CREATIONS_FOLLOWED = 256  # commits made elsewhere the creation cache is carried over (``_follow_commits``)
_PARSED_TREES_KEPT = 4096  # trees parsed or built by group commits, by id (``_build``)
# Their data and id offsets, for editing one id in place: each group needs its base's and then each
# of its commits' (three trees each); at 1,000 tenants a folder's tree is 40 KB.
_TREE_LAYOUTS_KEPT = 512
# Pipelined writes of one tenant before this process lets the tenant go (every one flushed, the flock
# released), so writers of another process sharing the checkout get their turn (``turn``).
_PIPELINED_RUN = 64
_COMMIT_TREES_KEPT = 4096  # the tree of each commit, by id (``_tree_of``)
_BLOB_MODES = (0o100000, 0o120000)  # what libgit2 calls a blob entry: a file (any mode) or a symlink
_UNSAFE_IN_IDENTITY = re.compile(r"[<>\n\r\0]")
_CREDENTIALS_IN_URL = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_log = logging.getLogger("tenancy.service")


class _OneTip:
    """The branch as one request's reads see it (``TenantRepository.one_tip``): read on first use."""

    __slots__ = ("read", "repository", "tip")

    def __init__(self, repository: TenantRepository) -> None:
        self.repository = repository
        self.tip: pygit2.Oid | None = None
        self.read = False


_ONE_TIP: ContextVar[_OneTip | None] = ContextVar("tenants_repo_one_tip", default=None)
_T = TypeVar("_T")


class RepositoryError(Exception):
    """git failed in a way retrying did not fix; the message names the step, never file contents."""


class TenantBusy(RepositoryError):
    """Another writer holds the tenant (another replica, or one that stopped mid-write and whose lock
    has not expired yet): nothing is wrong with the repository."""


class ConflictError(RepositoryError):
    """The tenant's file changed between reading it and committing (a pull request, a replica)."""


def redact(text: str) -> str:
    """Git's own text with credentials in URLs (``https://user:token@host``) removed."""
    return _CREDENTIALS_IN_URL.sub(r"\1***@", text)


@dataclass(frozen=True)
class GitAuthor:
    name: str
    email: str

    @classmethod
    def of(cls, display_name: str, email: str | None, subject: str) -> GitAuthor:
        # Nor any control or formatting character: ``git log`` prints the name to a terminal.
        name = without_forbidden(_UNSAFE_IN_IDENTITY.sub("", display_name)).strip() or "unknown"
        local = re.sub(r"[^A-Za-z0-9._-]", "-", subject)[:64] or "unknown"
        if not email or _UNSAFE_IN_IDENTITY.search(email) or forbidden_character(email):
            email = f"{local}@tenant-api.invalid"
        return cls(name=name[:100], email=email)


@dataclass(frozen=True)
class Creation:
    """The commit that created a tenant's file (its latest creation: a deleted and recreated tenant
    is a new incarnation with a new creation)."""

    sha: str
    time: float  # the commit's committer time (whole seconds)


@dataclass(frozen=True)
class Commit:
    sha: str
    author_name: str
    author_email: str
    subject: str


@dataclass(frozen=True)
class FileProblem:
    """Why a committed tenant file reads as {}: ``what`` is wrong with it and the ``detail``, so
    ``f"{file} {problem}"`` reads "tenants/dev/acme.yaml is not valid YAML: line 3, column 1: ..."."""

    what: str  # "is not valid YAML", "is not a tenant document"
    detail: str  # the loader's line, column and message; what the file holds instead of a mapping

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}"


@dataclass(frozen=True)
class TenantFile:
    """A committed tenant file: its text, parsed mapping and ETag, cached by blob id; ``problem`` says
    why its document is {} (the text is not YAML, or its YAML is not a mapping)."""

    blob: str
    text: str
    document: dict[str, Any]
    etag: str
    problem: FileProblem | None = None


def read_document(text: str) -> tuple[dict[str, Any], FileProblem | None]:
    """A tenant file's mapping, or {} and why: the text is not YAML (``line L, column C: ...``, a
    self-containing alias included), or its one document is no mapping (a list, a scalar, nothing)."""
    try:
        document = load_yaml(text)  # libyaml's: reads are on every GET
    except yaml.YAMLError as error:
        return {}, FileProblem("is not valid YAML", yaml_problem(error, text))
    if not isinstance(document, dict):
        return {}, FileProblem("is not a tenant document", not_a_mapping(document))
    return document, None


def parse_document(text: str) -> dict[str, Any]:
    return read_document(text)[0]


def dump_document(document: dict[str, Any]) -> str:
    return dump_tenant_yaml(document)  # yaml.dump's text with CSafeDumper, in a tenth of its time


def etag_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class _Change:
    path: str  # relative to the repository root, "tenants/dev/acme.yaml"
    blob: pygit2.Oid | None  # None: delete the file
    expected: pygit2.Oid | None  # the file's blob when the change was made (None: absent)
    author: GitAuthor
    message: str
    content: bytes | None = None  # the blob's data, stored with the group's pack
    done: bool = False
    commit: str | None = None
    error: RepositoryError | None = None
    lead: bool = False  # handed the publishing of the next group
    # Set once the change is done or hands it the lead: only its own thread wakes, not every waiter.
    wakeup: threading.Event = field(default_factory=threading.Event)
    # The change of the same file that this one was made on while it was not flushed yet (a pipelined
    # write, ``WriteTurn``): if that one fails, so does this one. Always in this group or an earlier one.
    after: _Change | None = None
    settled: threading.Event = field(default_factory=threading.Event)  # done: committed or failed
    # What its writer has done once the change is in the branch, in the same round as the commit, by
    # whoever publishes the group (``TenantRepository.after_publish``): the service queues the
    # change's operation there. Opaque here.
    follow_up: object | None = None


@dataclass(eq=False)
class _Write:
    """A write of one tenant's file in a ``WriteTurn``, from its place in the commit order to its
    answer: what the next writer of the tenant in this process builds on, flushed or not."""

    path: str
    file: TenantFile  # the file as this write leaves it
    blob: pygit2.Oid
    change: _Change | None  # None: the file was already so (nothing to commit)
    basis: _Change | None  # the newest change the file depends on: its own, or the one it was made on
    # Its operation has its place in the queue (or never will): the next write's may follow it.
    queued: threading.Event = field(default_factory=threading.Event)


class _TenantSlot:
    """A tenant's lock in this process: ``mutex`` for the threads (one reads, checks and places its
    change at a time), the ``flock`` of its lock file for processes sharing the checkout, held from the
    first turn until every turn of this process on the tenant has ended (flushed and queued)."""

    def __init__(self) -> None:
        self.mutex = threading.RLock()
        self.guard = threading.Condition(threading.Lock())  # for the fields below
        self.descriptor: int | None = None  # the lock file, flocked, while turns are alive
        self.users = 0  # turns alive: the one holding ``mutex`` and those that released it early
        self.run = 0  # turns since the flock was taken (``_PIPELINED_RUN``)
        self.last: _Write | None = None  # the newest write of a turn alive


class TenantRepository:
    def __init__(
        self,
        root: Path,
        *,
        tenants_path: str = "tenants",
        remote: str | None = None,
        branch: str = "main",
        refresh_seconds: float = 5.0,
        view_delay_seconds: float = 0.0,
    ) -> None:
        """``view_delay_seconds``: 0 updates the working copy after every group of commits; more lets
        a background thread update it at most that often (under load: the view costs the writers)."""
        self.root = root
        self.git_dir = root / ".git"
        self.tenants_path = tenants_path
        self.tenants_dir = root / tenants_path
        self.remote = remote
        self.branch = branch
        self.ref = f"refs/heads/{branch}"
        self.refresh_seconds = refresh_seconds
        self._local = threading.local()  # one pygit2.Repository per thread (libgit2 objects are not shared)
        self._marker = -1  # ``_mark_service_process``
        # The commit lock: threads of this process (RLock) and other processes on this checkout (flock).
        self._commit_lock = threading.RLock()
        self._commit_depth = 0
        self._commit_handle: Any = None
        # Per-tenant locks (threads), each paired with a flock for processes sharing the checkout.
        self._tenant_locks: dict[str, _TenantSlot] = {}
        self._tenant_locks_guard = threading.Lock()
        # Group commit: changes wait here while a leader publishes the previous group.
        self._group: GroupCommit[_Change] = GroupCommit(self._commit_group)
        self._packs_written = 0  # since git last merged packs (``_merge_packs``)
        self._merging: threading.Thread | None = None
        self._maintenance = threading.Lock()  # one git gc or repack at a time
        self._packs_generation = 0  # one more each time git may have removed packs
        self._removals_checked = float("-inf")
        self._removals_seen = -1
        self._view_delay = view_delay_seconds
        # Replicas sharing the remote take turns pushing to it (``RedisPushTurn``); none: no turns.
        self.push_turn: Callable[[], contextlib.AbstractContextManager[PushTurn]] | None = None
        # Called by the publisher of a group once the branch has it, before any of its writers is
        # answered, with the follow-ups of its changes (``_Change.follow_up``) in commit order and each
        # one's commit: one round for the commit and what follows it (the service's queueing), instead
        # of a second group round after each writer wakes. Never raises: a follow-up it leaves undone
        # is its writer's to report (the service answers that the change was not queued).
        self.after_publish: Callable[[list[tuple[object, str]]], None] | None = None
        self._view_behind = threading.Event()
        self._view_thread: threading.Thread | None = None
        self._synced_at = float("-inf")  # never synced: the first read refreshes
        self._fetched_at = float("-inf")  # wall clock: when a sync last brought the remote's branch
        self._health: tuple[float, bool] | None = None
        self._remote_ok = True
        self._parsed: dict[pygit2.Oid, TenantFile] = {}
        # Trees parsed or built by ``_build`` (under the commit lock) or parsed by readers, by raw id: a
        # group's trees are the next group's base and what readers look files up in, so none is
        # parsed twice. Entries are never changed once in (dict operations are atomic).
        self._trees: dict[bytes, git_pack.TreeEntries] = {}
        self._tree_layouts: dict[bytes, git_pack.TreeLayout | None] = {}
        self._commit_trees: dict[bytes, bytes] = {}  # commit -> its tree, raw ids (``_tree_of``)
        self._names: tuple[pygit2.Oid | None, list[tuple[str, str]]] = (None, [])
        self._creations_lock = threading.Lock()
        self._creations_head = ""
        self._creations: dict[tuple[str, str], Creation | None] = {}
        # The branch heads the cache has been carried through since it last started afresh: a reader
        # holding any of them may use it (the cache is as new or newer). Bounded, oldest dropped.
        self._creations_heads: dict[str, None] = {}
        self._creations_generation = 0
        # The group being published: (base, tip, commits, time), for ``_creations_follow``.
        self._publishing: tuple[pygit2.Oid | None, pygit2.Oid, list[tuple[_Change, str]], int] | None = None

    # --- setup ---------------------------------------------------------------------------------------

    def ensure(self, *, seed_from: Path | None = None, recover: bool = True) -> None:
        """Create the repository (optionally with the tenant files of ``seed_from``) unless it exists;
        with a remote, clone it, or bring an existing checkout up to date with it. An existing checkout
        is first recovered from whatever a killed process left: stale git locks, a half-done rebase of
        an earlier version, a working copy that is not the branch's commit. ``recover=False``: an
        existing checkout was just recovered by the process that started this one."""
        if self.git_dir.exists():
            self._mark_service_process()
            with self._committing():
                self._configure()
                if recover:
                    self.recover()
                if self._tip() is None and self.remote is None:
                    self._initial_commit(seed_from)  # killed between `git init` and the first commit
            if self.remote is not None:
                try:
                    self.sync()
                except RepositoryError as error:  # serve what the checkout has; reads retry
                    _log.warning("could not bring the tenants checkout up to date: %s", error)
            return
        if self.remote is not None:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            staging = self.root.with_name(f".{self.root.name}.cloning")
            shutil.rmtree(staging, ignore_errors=True)
            self._run("clone", "--quiet", "--branch", self.branch, self.remote, str(staging), cwd=Path("/"))
            os.replace(staging, self.root)  # a clone killed halfway is never taken for a checkout
            self._mark_service_process()
            with self._committing():
                self._configure()
            self._synced_at, self._fetched_at = time.monotonic(), time.time()
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._run("init", "--quiet", "--initial-branch", self.branch)
        self._mark_service_process()
        with self._committing():
            self._configure()
            self._initial_commit(seed_from)

    def _mark_service_process(self) -> None:
        """Keep the marker open for as long as this process lives: the other processes of the
        service tell it from a person's git by it (``git_locks``)."""
        if self._marker < 0:
            self._marker = os.open(
                self.git_dir / git_locks.SERVICE_MARKER, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            weakref.finalize(self, os.close, self._marker)

    def _configure(self) -> None:
        """No reflogs: libgit2 rewrites a ref's whole reflog on every update, so each commit would
        cost more than the last; the commits themselves are the record."""
        config = self._git().config
        if config.get_bool("core.logAllRefUpdates") if "core.logAllRefUpdates" in config else True:
            config["core.logAllRefUpdates"] = False

    def _initial_commit(self, seed_from: Path | None) -> None:
        repo = self._git()
        files: dict[str, bytes] = {
            f"{self.tenants_path}/README.md": (
                b"# Tenants\n\nOne file per tenant: `<env>/<name>.yaml`, "
                b"written by the tenant API and by pull requests.\n"
            )
        }
        if seed_from is not None and seed_from.is_dir():
            for environment in ENVIRONMENTS:
                for source in sorted((seed_from / environment).glob("*.yaml")):
                    files[f"{self.tenants_path}/{environment}/{source.name}"] = source.read_bytes()
        tree = repo.TreeBuilder().write()
        written = [tree]
        for path, content in files.items():
            blob = repo.create_blob(content)
            written.append(blob)
            tree = _edit_tree(repo, tree, path.split("/"), blob, written)
        committer = _signature(COMMITTER_NAME, COMMITTER_EMAIL, "GIT_COMMITTER_DATE")
        commit = repo.create_commit(
            None, committer, committer, "Initialise the tenants repository\n", tree, []
        )
        self._sync_loose([*written, commit])  # every later commit builds on these
        repo.create_reference_direct(self.ref, commit, False, "tenant-api: initialise")
        self._sync_ref()
        self._update_working_copy()

    def recover(self, *, restore: bool = True) -> list[str]:
        """Bring the checkout back to the branch's last commit: stale locks removed (only when no live
        process may hold them), leftovers of an interrupted rebase dropped, the working copy reset.
        Returns what was still wrong (locks a live process keeps); [] when everything is fine."""
        with self._committing():
            removed, holders = git_locks.clear_stale_locks(self.root, self.git_dir)
            if holders:
                if restore:
                    self._update_working_copy(clean=True)  # fails harmlessly if the index is the lock
                return [f"a git lock is kept by {holder}" for holder in holders]
            for leftover in ("rebase-merge", "rebase-apply"):
                if (self.git_dir / leftover).exists():
                    shutil.rmtree(self.git_dir / leftover, ignore_errors=True)
                    _log.warning("dropped an interrupted rebase (%s) from the tenants checkout", leftover)
                    restore = True
            if restore or removed:
                self._update_working_copy(clean=True)
            return []

    def healthy(self) -> bool:
        """Whether a write could succeed now (no git lock in the way, the branch readable, objects
        writable, the remote reachable); cached for a few seconds so readiness probes cost nothing."""
        now = time.monotonic()
        cached = self._health
        if cached is not None and now - cached[0] < _HEALTH_CACHE_SECONDS:
            return cached[1]
        problems = self.write_problems()
        if problems:
            _log.warning("tenants repository not writable: %s", "; ".join(problems))
        healthy = not problems
        # Not ready is rechecked within a second: readiness follows a lock as soon as it is gone.
        self._health = (now if healthy else now - _HEALTH_CACHE_SECONDS + 1.0, healthy)
        return healthy

    def write_problems(self) -> list[str]:
        """What would keep a write from succeeding now ([] when nothing): clears what it safely can."""
        if not self._commit_lock.acquire(timeout=1.0):
            return []  # a write is being published right now: it is the check
        try:
            with self._committing():
                problems = self.recover(restore=False)
                if problems:
                    return problems
                if self._tip() is None:
                    return [f"the branch {self.branch} has no commit"]
                objects = self.git_dir / "objects"
                probe = objects / f".tenant-api-probe-{os.getpid()}"
                try:
                    probe.write_bytes(b"")
                    probe.unlink()
                except OSError as error:
                    return [f"cannot write git objects: {error.strerror}"]
                if self.remote is not None and not self._remote_ok:
                    try:
                        self._fetch()
                    except RepositoryError as error:
                        return [f"the remote cannot be reached: {error}"]
                return []
        except RepositoryError as error:
            return [str(error)]
        finally:
            self._commit_lock.release()

    # --- reads ---------------------------------------------------------------------------------------

    def path_of(self, environment: str, name: str) -> Path:
        return self.tenants_dir / environment / f"{name}.yaml"

    def _relative(self, environment: str, name: str) -> str:
        return f"{self.tenants_path}/{environment}/{name}.yaml"

    def file(self, environment: str, name: str) -> TenantFile | None:
        """The committed file (text, parsed, ETag), cached by blob id; None when there is none."""
        self.refresh()
        blob = self._blob_at_tip(self._relative(environment, name))
        return None if blob is None else self._parsed_blob(blob)

    def _blob_at_tip(self, path: str) -> pygit2.Oid | None:
        """The blob at ``path`` in the branch's commit, looked up in trees parsed once per id (ours
        are parsed when built): asking libgit2 cost each request thread's repository a scan of the
        pack folder after every group, whose objects are in a pack it has not seen."""
        tip = self._tip()
        if tip is None:
            return None
        entry = git_pack.entry_at(self._tree_entries, self._tree_of(tip.raw), path)
        if entry is None or entry[0] & 0o170000 not in _BLOB_MODES:
            return None
        return pygit2.Oid(raw=entry[1])

    def _tree_of(self, commit: bytes) -> bytes:
        tree = self._commit_trees.get(commit)
        if tree is None:
            found = self._git()[pygit2.Oid(raw=commit)]
            assert isinstance(found, pygit2.Commit)
            tree = found.tree_id.raw
            if len(self._commit_trees) >= _COMMIT_TREES_KEPT:
                self._commit_trees.clear()
            self._commit_trees[commit] = tree
        return tree

    def _tree_entries(self, tree: bytes) -> git_pack.TreeEntries:
        entries = self._trees.get(tree)
        if entries is None:
            entries = git_pack.parse_tree(self._git()[pygit2.Oid(raw=tree)].read_raw())
            if len(self._trees) > _PARSED_TREES_KEPT:
                self._trees.clear()
            self._trees[tree] = entries
        return entries

    def read_text(self, environment: str, name: str) -> str | None:
        found = self.file(environment, name)
        return None if found is None else found.text

    def read(self, environment: str, name: str) -> dict[str, Any] | None:
        found = self.file(environment, name)
        return None if found is None else copy.deepcopy(found.document)

    def exists(self, environment: str, name: str) -> bool:
        return self.file(environment, name) is not None

    def names(self) -> list[tuple[str, str]]:
        """(environment, name) of every committed tenant file."""
        self.refresh()
        tip = self._tip()
        cached_tip, cached = self._names
        if tip is not None and tip == cached_tip:
            return list(cached)
        found: list[tuple[str, str]] = []
        tree = self._tip_tree()
        if tree is not None:
            for environment in ENVIRONMENTS:
                folder = _subtree(tree, f"{self.tenants_path}/{environment}")
                if folder is None:
                    continue
                found += sorted(
                    (environment, str(entry.name).removesuffix(".yaml"))
                    for entry in folder
                    if str(entry.name).endswith(".yaml") and entry.type_str == "blob"
                )
        self._names = (tip, found)
        return list(found)

    def _parsed_blob(self, blob: pygit2.Oid) -> TenantFile:
        found = self._parsed.get(blob)
        if found is None:
            data = self._git()[blob].read_raw()
            text = data.decode("utf-8", errors="replace")
            document, problem = read_document(text)
            found = TenantFile(str(blob), text, document, etag_of(text), problem)
            if len(self._parsed) >= _PARSED_CACHE_ENTRIES:
                self._parsed.clear()
            self._parsed[blob] = found
        return found

    def creation(self, environment: str, name: str) -> Creation | None:
        """The commit that last created the tenant's file (also once it is deleted again); None if the
        file never existed. Cached until the branch moves, so API-key checks cost no git process."""
        tip = self._tip()
        head = str(tip) if tip is not None else ""
        key = (environment, name)
        with self._creations_lock:
            if not head or not self._creations_follow(head, walk=True):
                # The branch moved in a way the cache could not follow (a merged pull request, a long
                # way from the cache's commit): start afresh. A head the cache went through is fine
                # even if the cache has moved on since: it then answers for a newer commit, which is
                # what the branch says.
                self._reset_creations(head)
            if key in self._creations:
                return self._creations[key]
            generation = self._creations_generation
        if not head:
            return None
        output = self._run(
            "log", "-n1", "--diff-filter=A", "--format=%H %ct", head, "--", self._relative(environment, name)
        ).stdout.split()
        found = Creation(sha=output[0], time=float(output[1])) if len(output) == 2 else None
        with self._creations_lock:
            # Still valid if the cache only followed our own commits since: any creation of this file
            # among them was recorded by ``_advance_creations``, and that entry stays.
            if generation == self._creations_generation and key not in self._creations:
                self._creations[key] = found
        return found

    def reads_wait(self, environment: str, name: str) -> bool:
        """Whether reading the tenant (``file``, ``creation``) may wait on something: a refresh from
        the remote that is due, or a creation not cached yet (a git process). False: the reads are
        in-memory lookups and libgit2 reads of local files, fine on the event loop."""
        if self.remote is not None and time.monotonic() - self._synced_at >= self.refresh_seconds:
            return True
        tip = self._tip()
        with self._creations_lock:
            return not self._creations_follow(str(tip)) or (environment, name) not in self._creations

    def _reset_creations(self, head: str) -> None:
        self._creations = {}
        self._creations_head = head
        self._creations_heads = {head: None} if head else {}
        self._creations_generation += 1

    def history(self, environment: str, name: str) -> list[Commit]:
        """Commits that touched the tenant's file, newest first."""
        tip = self._tip()
        if tip is None:
            return []
        output = self._run(
            "log", "--format=%H%x1f%an%x1f%ae%x1f%s", str(tip), "--", self._relative(environment, name)
        ).stdout
        commits = []
        for line in output.splitlines():
            sha, author_name, author_email, subject = line.split("\x1f", 3)
            commits.append(Commit(sha, author_name, author_email, subject))
        return commits

    def made_last_change(self, environment: str, name: str) -> bool:
        """Whether the newest commit of the tenant's file is the service's own (committer
        ``tenant-api``), not a merged pull request or a hand commit. The committer is what the commit
        says, so this sorts, it does not authenticate: it only decides who applies the change."""
        tip = self._tip()
        if tip is None:
            return False
        output = self._run("log", "-n1", "--format=%ce", str(tip), "--", self._relative(environment, name))
        return output.stdout.strip() == COMMITTER_EMAIL

    def commit_naming(self, environment: str, name: str, trailer: str) -> str | None:
        """The newest commit of the tenant's file whose message has ``trailer`` as a whole line (say
        ``Change-Request: cr-…``), or None."""
        if not _PLAIN_TRAILER.fullmatch(trailer):
            raise ValueError(f"not a plain trailer line: {trailer!r}")
        tip = self._tip()
        if tip is None:
            return None
        output = self._run(
            "log",
            "--format=%H",
            # The whole line (git matches ^ and $ at each line of a message); the trailer holds no
            # character a regular expression reads otherwise (checked above).
            f"--grep=^{trailer}$",
            str(tip),
            "--",
            self._relative(environment, name),
        ).stdout
        return output.split()[0] if output.split() else None

    def maintain(self, *, loose_objects: int = 6700) -> None:
        """Pack loose objects once there are about ``loose_objects`` of them (git's ``gc --auto``; each
        change leaves five). Run off the request path. Holding the commit lock, no compare-and-swap,
        push or view update runs meanwhile; objects a write stored but has not referenced yet are young,
        and only unreachable objects older than two weeks are ever pruned, so none is lost. Refs and
        reflogs are left alone. Failures are logged: the repository works unpacked, only slower."""
        with self._committing(), self._maintenance:
            try:
                self._run(
                    "-c", "gc.autoDetach=false",  # in this process, inside the lock, never after it
                    "-c", f"gc.auto={loose_objects}",
                    "-c", "gc.pruneExpire=2.weeks.ago",  # whatever the repository's own config says
                    "-c", "gc.packRefs=false",
                    "-c", "gc.reflogExpire=never",
                    "-c", "gc.reflogExpireUnreachable=never",
                    "gc", "--auto", "--quiet",
                )  # fmt: skip
            except RepositoryError as error:
                _log.warning("packing the tenants repository's loose objects failed: %s", error)
            self._sync_pack_folder("packing its loose objects")
            self._packs_removed()
        self._write_commit_graph()

    def _write_commit_graph(self) -> None:
        """Index the history for ``git log -- <file>`` (a tenant's creating commit, its history): a
        commit-graph with changed-path Bloom filters lets git skip the commits that did not touch the
        file, instead of opening every one; a creation lookup on a cold cache walks the whole history
        (seconds on tens of thousands of commits, about a tenth of it with the filters: outside
        review). Incremental (``--split``): each run adds the commits since the last. Only an index:
        a failure is logged and the lookups stay as slow as before."""
        try:
            self._run("commit-graph", "write", "--reachable", "--changed-paths", "--split")
        except RepositoryError as error:
            _log.warning("indexing the tenants repository's history failed: %s", error)

    def _merge_packs_when_many(self) -> None:
        """Every ``_PACKS_BEFORE_MERGE`` packs of our own, let git merge the small ones (a geometric
        progression: few packs, each object rewritten a few times at most), in its own process and
        thread, never on a request's path. New packs keep arriving meanwhile; git leaves them alone."""
        if self._packs_written < _PACKS_BEFORE_MERGE:
            return
        if self._merging is not None and self._merging.is_alive():
            return
        self._packs_written = 0
        self._merging = threading.Thread(target=self._merge_packs, name="tenants-repo-repack", daemon=True)
        self._merging.start()

    def _merge_packs(self) -> None:
        with self._maintenance:
            # One merge at a time in all the service's processes: another's merge takes ours in.
            descriptor = _open_lock_file(self.git_dir / "tenant-api-maintenance.flock")
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                return
            try:
                self._run("repack", "-d", "-q", "--geometric=2")
            except RepositoryError as error:  # lookups only get slower; the next merge tries again
                _log.warning("merging the tenants repository's packs failed: %s", error)
            finally:
                os.close(descriptor)
            self._sync_pack_folder("merging its packs")
            self._packs_removed()
            self._write_commit_graph()

    def _packs_removed(self) -> None:
        """Git may have removed packs: this process's repositories are opened afresh, and the
        service's other processes learn it from the count of such runs (``_git``)."""
        descriptor = os.open(
            self.git_dir / _PACKS_REMOVED, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            os.write(descriptor, b".")
        finally:
            os.close(descriptor)
        self._packs_generation += 1

    def _sync_pack_folder(self, after: str) -> None:
        """Flush ``objects/pack`` once git's gc or repack is done (or failed part way). git flushes
        the packs it writes (``core.fsync``), not the folder naming them, and then removes what they
        replace: flushed here, the new names are on disk before the lock lets any write build on them,
        and a power loss can keep the removals and lose the names only during git's own run (ext4's
        journal orders those). A failure is logged; the next group's flush of the folder retries it."""
        try:
            durable.sync_folders([self.git_dir / "objects" / "pack"])
        except OSError as error:
            _log.warning("flushing the tenants repository's pack folder after %s failed: %s", after, error)

    def head(self) -> str | None:
        tip = self._tip()
        return None if tip is None else str(tip)

    def _git(self) -> pygit2.Repository:
        now = time.monotonic()
        if now - self._removals_checked >= 1.0:  # another process's git gc or repack (``_packs_removed``)
            self._removals_checked = now
            try:
                removals = os.stat(self.git_dir / _PACKS_REMOVED).st_size
            except OSError:
                removals = 0
            if removals != self._removals_seen:
                self._removals_seen = removals
                self._packs_generation += 1
        repo: pygit2.Repository | None = getattr(self._local, "repo", None)
        if repo is None or self._local.packs != self._packs_generation:
            # Opened afresh after git merged or removed packs: libgit2 keeps every pack a repository
            # object has used open (descriptor and mapping) for as long as that object lives, removed
            # from disk or not.
            generation = self._packs_generation
            try:
                repo = pygit2.Repository(str(self.git_dir))
            except pygit2.GitError as error:
                raise RepositoryError(f"cannot open the tenants repository: {redact(str(error))}") from None
            self._local.repo, self._local.packs = repo, generation
        return repo

    @contextlib.contextmanager
    def one_tip(self) -> Iterator[None]:
        """Reads inside see the branch read once, not once per lookup (a GET read it three or four
        times: whether reads wait, the file, the incarnation), and so all see the same commit. For
        reads only (a write checks the branch afresh); a refresh that syncs reads it again."""
        token = _ONE_TIP.set(_OneTip(self))
        try:
            yield
        finally:
            _ONE_TIP.reset(token)

    def _tip(self) -> pygit2.Oid | None:
        pinned = _ONE_TIP.get()
        if pinned is not None and pinned.repository is self and pinned.read:
            return pinned.tip
        tip = self._read_ref()
        if pinned is not None and pinned.repository is self:
            pinned.tip, pinned.read = tip, True
        return tip

    def _read_ref(self) -> pygit2.Oid | None:
        try:
            reference = self._git().references.get(self.ref)
        except pygit2.GitError as error:
            raise RepositoryError(f"cannot read {self.ref}: {redact(str(error))}") from None
        return None if reference is None else reference.target  # type: ignore[return-value]

    def _tip_tree(self) -> pygit2.Tree | None:
        tip = self._tip()
        if tip is None:
            return None
        commit = self._git()[tip]
        assert isinstance(commit, pygit2.Commit)
        return commit.tree

    # --- locks ---------------------------------------------------------------------------------------

    def locked(self, key: str | None = None) -> contextlib.AbstractContextManager[WriteTurn]:
        """Hold a tenant (``key``, say ``dev.acme``) for a read-modify-commit sequence, against threads
        of this process and processes sharing the checkout; without a key, the whole repository. It
        starts once every pipelined write of the tenant in this process is flushed and queued, and
        nothing else starts on the tenant until it ends."""
        return self.turn(key)

    @contextlib.contextmanager
    def turn(self, key: str | None = None, *, pipelined: bool = False) -> Iterator[WriteTurn]:
        """A writer's turn at a tenant (``locked``). ``pipelined``: early lock release. The writer
        reads the tenant as the newest change of this process left it, flushed or not
        (``WriteTurn.file``), places its change after it (``write_file``) and lets the next writer in
        (``release``) before its change is flushed; it is answered once its change and every one before
        it are flushed (``durable``) and queued (``in_order``), so consecutive writers of one tenant
        share flushes as writers of different tenants do. Another process's writers of the tenant
        wait as before: the flock is held until this process's writes of the tenant are all flushed and
        queued, at most ``_PIPELINED_RUN`` of them in a row. Never with a remote (every write starts
        from the remote's branch)."""
        key = key or "*"
        with self._tenant_locks_guard:
            slot = self._tenant_locks.get(key)
            if slot is None:
                slot = self._tenant_locks[key] = _TenantSlot()
        pipelined = pipelined and self.remote is None
        slot.mutex.acquire()
        try:
            with slot.guard:
                last = slot.last
                if slot.users and (
                    not pipelined
                    or slot.run >= _PIPELINED_RUN
                    or last is None
                    or (last.basis is not None and last.basis.error is not None)
                ):
                    # Today's waiting: for every write of this process on the tenant to be flushed and
                    # queued (which releases the flock: another process may take the tenant first).
                    slot.guard.wait_for(lambda: slot.users == 0)
                if slot.descriptor is None:
                    descriptor = _open_lock_file(self.git_dir / "tenant-api-locks" / _lock_file_name(key))
                    try:
                        fcntl.flock(descriptor, fcntl.LOCK_EX)
                    except BaseException:
                        os.close(descriptor)
                        raise
                    slot.descriptor, slot.run = descriptor, 0
                slot.users += 1
                slot.run += 1
                after = slot.last
        except BaseException:
            slot.mutex.release()
            raise
        turn = WriteTurn(self, slot, pipelined, after)
        try:
            yield turn
        finally:
            turn._end()

    @contextlib.contextmanager
    def _committing(self) -> Iterator[None]:
        """The commit lock: whoever holds it may move refs and touch the working copy. The kernel drops
        the flock when its holder dies, so holding it proves no service process is mid-write."""
        with self._commit_lock:
            if self._commit_depth == 0:
                descriptor = _open_lock_file(self.git_dir / "tenant-api-commit.flock")
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX)
                except BaseException:
                    os.close(descriptor)
                    raise
                self._commit_handle = descriptor
            self._commit_depth += 1
            try:
                yield
            finally:
                self._commit_depth -= 1
                if self._commit_depth == 0:
                    os.close(self._commit_handle)
                    self._commit_handle = None

    # --- remote --------------------------------------------------------------------------------------

    def sync(self) -> None:
        """Make the branch exactly the remote's (no-op without a remote): the service keeps no
        local-only work, so a commit that was never pushed is dropped rather than published later."""
        if self.remote is None:
            return
        with self._committing():
            remote_tip = self._fetch()
            repo = self._git()
            repo.create_reference_direct(self.ref, remote_tip, True, "tenant-api: sync")
            self._synced_at, self._fetched_at = time.monotonic(), time.time()
            self._update_working_copy(clean=True)

    def _fetch(self) -> pygit2.Oid:
        """Fetch the remote branch; its commit. Records whether the remote answered (readiness)."""
        try:
            self._run(
                "fetch", "--quiet", "origin", f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}"
            )
        except RepositoryError:
            self._remote_ok = False
            raise
        self._remote_ok = True
        reference = self._git().references.get(f"refs/remotes/origin/{self.branch}")
        if reference is None:
            raise RepositoryError(f"the remote has no branch {self.branch}")
        return reference.target  # type: ignore[return-value]

    def fetched_after(self, moment: float) -> bool:
        """Whether the branch is the remote's as of after ``moment`` (wall clock; always, without a
        remote): it then has every change pushed before that moment."""
        return self.remote is None or self._fetched_at > moment

    def refresh(self, *, max_age: float | None = None) -> None:
        """Sync when the branch is older than ``max_age`` (default ``refresh_seconds``), for reads.
        Never waits: while another thread or process writes, readers use the branch as it is. A remote
        that cannot be reached leaves the branch as it was."""
        if self.remote is None:
            return
        age = self.refresh_seconds if max_age is None else max_age
        if time.monotonic() - self._synced_at < age:
            return
        if not self._commit_lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self._synced_at < age:
                return  # another reader refreshed while this one waited for the lock
            try:
                self.sync()
            except RepositoryError as error:
                self._synced_at = time.monotonic()  # do not hammer an unreachable remote
                _log.warning("refreshing the tenants checkout failed: %s", error)
            finally:
                pinned = _ONE_TIP.get()
                if pinned is not None:
                    pinned.read = False  # the sync may have moved the branch: read it again
        finally:
            self._commit_lock.release()

    # --- writes --------------------------------------------------------------------------------------

    def write(
        self, environment: str, name: str, document: dict[str, Any], *, author: GitAuthor, message: str
    ) -> str | None:
        """Commit the tenant's file (and push it); return the commit, or None when nothing changed.
        Callers hold the tenant (``locked``) so the file they read is the one they replace."""
        return self.write_file(environment, name, document, author=author, message=message)[0]

    def write_file(
        self, environment: str, name: str, document: dict[str, Any], *, author: GitAuthor, message: str
    ) -> tuple[str | None, TenantFile]:
        """``write``, also returning the file as committed (its text and ETag): what a read of it
        right after would give, without reading it."""
        content, blob, written = self._prepared(document)
        commit = self._change(
            self._relative(environment, name), blob, author=author, message=message, content=content
        )
        return commit, written

    def _prepared(self, document: dict[str, Any]) -> tuple[bytes, pygit2.Oid, TenantFile]:
        """The file ``document`` is written as: its bytes, its blob id and the file as read back."""
        text = dump_document(document)
        content = text.encode("utf-8")
        # Stored with the group's commits, in its pack: only its id is needed before that.
        blob = pygit2.Oid(raw=git_pack.object_id(git_pack.BLOB, content))
        written = self._parsed.get(blob)
        if written is None:  # the next read of this file needs no YAML parse
            # For plain JSON values, what parsing ``text`` gives (the safe dumper quotes whatever would
            # load as another type) is a copy of them, at a tenth of the parse's cost.
            parsed = json.loads(json.dumps(document)) if _plain(document) else parse_document(text)
            written = TenantFile(str(blob), text, parsed, etag_of(text))
            self._parsed[blob] = written
        return content, blob, written

    def delete(self, environment: str, name: str, *, author: GitAuthor, message: str) -> str | None:
        return self._change(self._relative(environment, name), None, author=author, message=message)

    def _store(self, content: bytes) -> pygit2.Oid:
        try:
            return self._git().create_blob(content)
        except (pygit2.GitError, OSError) as error:
            raise self._failed("storing the tenant file failed", redact(str(error))) from None

    def _change(
        self,
        path: str,
        blob: pygit2.Oid | None,
        *,
        author: GitAuthor,
        message: str,
        content: bytes | None = None,
    ) -> str | None:
        expected = self._blob_at_tip(path)
        if expected == blob:
            return None  # unchanged (or deleting what is not there)
        change = _Change(path, blob, expected, author, _clean_message(message), content=content)
        self._place(change)
        self._publish(change)
        if change.error is not None:
            raise change.error
        return change.commit

    def _place(self, change: _Change) -> None:
        """Group commit: queue the change after every change queued before it; ``_publish`` next."""
        self._group.add(change)

    def _publish(self, change: _Change) -> None:
        """Wait for a placed change: the first writer to find no publisher running publishes
        everything queued (its own change included), then hands the lead to the oldest change that
        arrived meanwhile; the others sleep until their own change is done (or they get the lead)."""
        self._group.wait(change)

    def _commit_group(self, group: list[_Change]) -> None:
        turn = self.push_turn if self.remote is not None and self.push_turn is not None else None
        try:
            with self._committing(), turn() if turn is not None else contextlib.nullcontext() as held:
                # Changes placed while another process held the commit lock join this group: one
                # round of flushes for all of them (``GroupCommit.take_arrived``).
                group += self._group.take_arrived()
                if held is not None and held.last_pushed not in (None, str(self._base())):
                    # Another replica pushed since this one fetched: a group built now would be
                    # refused, and built again after a fetch. Fetch first.
                    self._fetch()
                self._commit_group_locked(group, pushed=held.pushed if held is not None else None)
        except BaseException as error:
            failure = (
                error
                if isinstance(error, RepositoryError)
                else RepositoryError(f"committing failed: {type(error).__name__}")
            )
            if not isinstance(error, RepositoryError):  # those are logged where they are raised
                _log.error("committing a group of changes failed: %s", type(error).__name__)
            for change in group:
                if not change.done and change.commit is None:  # a committed one stands
                    change.error, change.done = failure, True
            if isinstance(error, RepositoryError):
                self._after_failure()
            if not isinstance(error, Exception):
                raise
        finally:
            # What follows the commits (``after_publish``: their operations queued) runs once the git
            # locks are free for the next group, and before any of their writers is answered; the
            # next group of this process waits for it (``GroupCommit``), and a tenant's own lock is
            # held until its writer is answered, so its order is still the commit order.
            committed = [
                (change, change.commit) for change in group if change.commit is not None and not change.done
            ]
            try:
                self._follow_up(committed)
            finally:
                for change, _ in committed:
                    change.done = True
                _wake_done(group)

    def _commit_group_locked(
        self, group: list[_Change], *, pushed: Callable[[str], None] | None = None
    ) -> None:
        """``pushed``: told the branch's new tip once the remote has it (the push turn's record)."""
        repo = self._git()
        committer = _signature(COMMITTER_NAME, COMMITTER_EMAIL, "GIT_COMMITTER_DATE")
        cleared_locks = False
        for attempt in range(_PUSH_ATTEMPTS):
            base = self._base()
            reference = repo.references.get(self.ref)
            # The pack folder is flushed with the branch's lock file, at once (``_swap_ref``), where
            # the branch moves by compare-and-swap; else before anything else happens.
            swapping = self.remote is None and reference is not None and base is not None
            tip, built = self._build(repo, base, group, committer, flush_folder=not swapping)
            if not built or tip is None:
                return
            self._publishing = (base, tip, built, committer.time)
            try:
                if self.remote is not None:
                    self._push(tip)
                else:
                    self._compare_and_swap(reference, base, tip, pack_folder=swapping)
            except _Moved:
                # The branch moved under us (another process, the remote): rebuild on top of it, after
                # a random pause so writers that collided do not collide again in step.
                time.sleep(random.uniform(0, min(0.01 * 2**attempt, 0.5)))
                continue
            except (pygit2.GitError, OSError) as error:
                detail = redact(str(error))
                if not cleared_locks:
                    # A lock file in the way: if its process died, remove it and try once more.
                    cleared_locks = True
                    removed, holders = git_locks.clear_stale_locks(self.root, self.git_dir)
                    if removed:
                        continue
                    if holders:
                        kept = ", ".join(str(holder) for holder in holders)
                        raise self._failed(f"a git lock is kept by {kept}", detail) from None
                raise self._failed(f"updating {self.ref} failed", detail) from None
            if self.remote is not None:
                self._follow_pushed(tip)
                if pushed is not None:
                    pushed(str(tip))
            self._advance_creations(base, tip, built, committer.time)
            self._publishing = None
            for change, sha in built:
                change.commit = sha  # in the branch; done once followed up (``_commit_group``)
            if self._health is not None and not self._health[1]:
                self._health = None  # writes succeed again: let readiness say so now
            self._refresh_view()  # the working copy is only a view
            self._merge_packs_when_many()
            return
        raise self._failed(f"{self.ref} kept moving; gave up after {_PUSH_ATTEMPTS} attempts")

    def _follow_up(self, committed: list[tuple[_Change, str]]) -> None:
        """``after_publish`` for the group's changes that carry a follow-up (the branch has them)."""
        follow = [(change.follow_up, sha) for change, sha in committed if change.follow_up is not None]
        if not follow or self.after_publish is None:
            return
        try:
            self.after_publish(follow)
        except Exception as error:  # a bug: its writers find their follow-up not done, and say so
            _log.error("following up a group of commits failed: %s", type(error).__name__)

    def _advance_creations(
        self, base: pygit2.Oid | None, tip: pygit2.Oid, built: list[tuple[_Change, str]], when: int
    ) -> None:
        """Carry the creation cache over our own commits: only a file they add gets a new creation,
        so API-key checks and incarnation markers stay free of git processes under write load."""
        with self._creations_lock:
            self._advance_creations_locked(base, tip, built, when)

    def _advance_creations_locked(
        self, base: pygit2.Oid | None, tip: pygit2.Oid, built: list[tuple[_Change, str]], when: int
    ) -> None:
        if base is None or self._creations_head != str(base):
            return  # the cache was for another commit (or is past this one already)
        for change, sha in built:
            if change.expected is None and change.blob is not None:
                environment, name = self._split(change.path)
                self._creations[(environment, name)] = Creation(sha=sha, time=float(when))
        self._creations_head = str(tip)
        self._creations_heads[str(tip)] = None
        if len(self._creations_heads) > _CREATION_HEADS_KEPT:
            del self._creations_heads[next(iter(self._creations_heads))]

    def _creations_follow(self, head: str, *, walk: bool = False) -> bool:
        """Whether the creation cache answers for ``head`` (with ``_creations_lock`` held). A reader
        may see the branch at a group's commit between the branch moving and the publisher carrying
        the cache over it: that group is ours, so the reader carries it over instead of starting
        afresh (which would cost every tenant a ``git log`` under write load). ``walk``: also carry
        it over commits another process made (``_follow_commits``)."""
        if head in self._creations_heads:
            return True
        publishing = self._publishing
        if publishing is not None and str(publishing[1]) == head:
            self._advance_creations_locked(*publishing)
        if walk and head not in self._creations_heads:
            self._follow_commits(head)
        return head in self._creations_heads

    def _follow_commits(self, head: str) -> None:
        """Carry the creation cache from its commit to ``head`` over commits made elsewhere (the
        other processes of ``tenantctl serve --processes``, whose groups interleave with ours): a
        file a commit adds gets that commit as its creation, what ``git log --diff-filter=A``
        answers on a line of single-parent commits. Up to ``_CREATIONS_FOLLOWED`` commits; a
        merge, or a longer way, starts the cache afresh as before."""
        if not self._creations_head:
            return
        repo = self._git()
        chain: list[pygit2.Commit] = []
        commit = repo.get(head)
        while isinstance(commit, pygit2.Commit) and str(commit.id) != self._creations_head:
            if len(chain) >= _CREATIONS_FOLLOWED or len(commit.parent_ids) != 1:
                return
            chain.append(commit)
            commit = repo.get(commit.parent_ids[0])
        if not isinstance(commit, pygit2.Commit):
            return
        for commit in reversed(chain):
            before = _subtree(commit.parents[0].tree, self.tenants_path)
            after = _subtree(commit.tree, self.tenants_path)
            if after is None:
                continue
            added = after.diff_to_tree(swap=True) if before is None else before.diff_to_tree(after)
            for delta in added.deltas:
                if delta.status != DeltaStatus.ADDED:
                    continue
                environment, _, file = delta.new_file.path.partition("/")
                if file.endswith(".yaml") and "/" not in file:
                    name = file.removesuffix(".yaml")
                    self._creations[(environment, name)] = Creation(str(commit.id), float(commit.commit_time))
            self._creations_head = str(commit.id)
            self._creations_heads[self._creations_head] = None
        while len(self._creations_heads) > _CREATION_HEADS_KEPT:
            del self._creations_heads[next(iter(self._creations_heads))]

    def _split(self, path: str) -> tuple[str, str]:
        environment, file = path.removeprefix(f"{self.tenants_path}/").split("/", 1)
        return environment, file.removesuffix(".yaml")

    def _follow_pushed(self, tip: pygit2.Oid) -> None:
        """Point our branch and the remote-tracking one at what the remote now has. The push is the
        commit: if this fails, the next sync repairs it, and the change still counts as written."""
        repo = self._git()
        try:
            repo.create_reference_direct(
                f"refs/remotes/origin/{self.branch}", tip, True, "tenant-api: pushed"
            )
            repo.create_reference_direct(self.ref, tip, True, "tenant-api: commit")
        except (pygit2.GitError, OSError) as error:
            _log.warning("pushed %s but could not move the local branch: %s", tip, redact(str(error)))
            self._synced_at = float("-inf")

    def _compare_and_swap(
        self, reference: Any, base: pygit2.Oid | None, tip: pygit2.Oid, *, pack_folder: bool = False
    ) -> None:
        """Move the branch from ``base`` to ``tip`` only if it is still at ``base``. ``pack_folder``:
        the pack folder is flushed with the branch's lock file, before the branch moves."""
        if reference is not None and base is not None:
            self._swap_ref(base, tip, pack_folder=pack_folder)
            return
        if pack_folder:
            durable.sync_folders([self.git_dir / "objects" / "pack"])
        try:
            if reference is None:
                self._git().create_reference_direct(self.ref, tip, False, "tenant-api: commit")
            else:
                reference.set_target(tip, "tenant-api: commit")  # libgit2 checks the old value
        except (pygit2.GitError, ValueError, OSError):
            if self._tip() != base:
                raise _Moved() from None
            raise
        self._sync_ref()

    def _sync_ref(self) -> None:
        """Flush the branch as libgit2 wrote it (a loose ref) and its folder."""
        path = self.git_dir / self.ref
        durable.sync_file(path)
        durable.sync_folders([path.parent])

    def _swap_ref(self, base: pygit2.Oid, tip: pygit2.Oid, *, pack_folder: bool = False) -> None:
        """Git's own protocol for moving a ref (what libgit2 and ``git update-ref`` do): create
        ``<ref>.lock`` exclusively, check the ref still names ``base``, write ``tip`` into the lock and
        rename it over the ref. In Python, because the rename can wait milliseconds on the file
        system's journal and libgit2 would hold the GIL (every request thread) meanwhile.
        ``pack_folder``: flush the pack folder (the names of the group's pack) at once with the lock
        file: both are on disk before the rename makes the branch name the group's objects."""
        path = self.git_dir / self.ref
        lock = path.with_name(path.name + ".lock")
        try:
            descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as error:
            if self._tip() != base:
                raise _Moved() from None
            # Another process holds the ref's lock (or died holding it): the caller decides. Worded
            # as libgit2 and git word it, for whoever reads the log.
            raise pygit2.GitError(f"failed to lock file '{lock}' for writing: {error.strerror}") from None
        try:
            try:
                with os.fdopen(descriptor, "wb", closefd=True) as handle:
                    descriptor = -1
                    if self._tip() != base:  # read afresh, as update-ref does under the lock
                        raise _Moved()
                    handle.write(f"{tip}\n".encode())
                    handle.flush()
                    # The new value is on disk before its name is, and the pack's names too.
                    self._flush_lock_file(handle.fileno(), pack_folder)
                os.rename(lock, path)
                try:
                    durable.sync_folders([path.parent])  # the rename: acknowledged from here
                except OSError:
                    self._put_back_ref(path, lock, base)
                    raise
            except BaseException:
                if descriptor >= 0:
                    os.close(descriptor)
                lock.unlink(missing_ok=True)
                raise
        except _Moved:
            raise
        except OSError as error:
            raise pygit2.GitError(f"failed to update {self.ref}: {error.strerror}") from None

    def _flush_lock_file(self, descriptor: int, pack_folder: bool) -> None:
        if not pack_folder:
            durable.fsync(descriptor)
            return
        folder = durable.open_folder(self.git_dir / "objects" / "pack")
        try:
            durable.fsync_together([folder, descriptor])
        finally:
            os.close(folder)

    def _put_back_ref(self, path: Path, lock: Path, base: pygit2.Oid) -> None:
        """The branch was renamed to a group's tip, but the rename could not be flushed: its writers are
        answered with an error, so the branch must not keep their changes (readers would see them, the
        next group would make them durable, and no operation would be queued for them). Name ``base``
        again, by the same protocol (this process holds the commit lock: no one else moved it), and
        forget what readers learnt about creations from the tip meanwhile."""
        try:
            descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as error:
            _log.critical("%s names an unflushed commit and could not be put back: %s", self.ref, error)
            return
        try:
            with os.fdopen(descriptor, "wb", closefd=True) as handle:
                handle.write(f"{base}\n".encode())
                handle.flush()
                durable.fsync(handle.fileno())
            os.rename(lock, path)
            durable.sync_folders([path.parent])
        except OSError as error:
            lock.unlink(missing_ok=True)
            _log.critical("%s could not be put back to %s durably: %s", self.ref, base, error)
        with self._creations_lock:
            self._reset_creations(str(self._tip() or ""))

    def _base(self) -> pygit2.Oid | None:
        """What the next group builds on: the remote's branch as last fetched (with a remote), else ours."""
        if self.remote is None:
            return self._tip()
        reference = self._git().references.get(f"refs/remotes/origin/{self.branch}")
        return None if reference is None else reference.target  # type: ignore[return-value]

    def _build(
        self,
        repo: pygit2.Repository,
        base: pygit2.Oid | None,
        group: list[_Change],
        committer: Any,
        *,
        flush_folder: bool = True,
    ) -> tuple[pygit2.Oid | None, list[tuple[_Change, str]]]:
        """A chain of commits on ``base``, one per change that still applies, each under its author,
        stored as one pack (before anything names them), even for a single change: its objects as
        loose files would cost a flush each (blob, three trees, commit) and one per folder, against
        two for a pack and its index (at once) and one for their folder (``durable``; with
        ``flush_folder=False`` the caller's, before the branch names the objects)."""

        def read(raw: bytes) -> bytes:
            return repo[pygit2.Oid(raw=raw)].read_raw()

        if len(self._trees) > _PARSED_TREES_KEPT:
            self._trees.clear()
        if len(self._commit_trees) > _COMMIT_TREES_KEPT:
            self._commit_trees.clear()
        if len(self._tree_layouts) > _TREE_LAYOUTS_KEPT:
            self._tree_layouts.clear()
        batch = git_pack.ObjectBatch(read, self._trees, self._tree_layouts)
        parent = base.raw if base is not None else None
        # The base's tree from the map of commits built or read here: asking libgit2 for a commit it
        # has not seen costs its repository object a scan of the pack folder (0.3 ms a group).
        tree = self._tree_of(base.raw) if base is not None else batch.add(git_pack.TREE, git_pack.EMPTY_TREE)
        built: list[tuple[_Change, str]] = []
        for change in group:
            if change.done:
                continue
            after = change.after
            if after is not None and after.error is not None:
                change.error, change.done = _dependent_error(change.path, after.error), True
                continue
            current = batch.blob_at(tree, change.path)
            expected = change.expected.raw if change.expected is not None else None
            if current != expected:
                change.error = ConflictError(
                    f"{change.path} changed while this change was being written; read it again and retry"
                )
                change.done = True
                continue
            blob: bytes | None = None
            if change.blob is not None:
                if change.content is not None:
                    blob = batch.add(git_pack.BLOB, change.content)
                else:
                    blob = change.blob.raw  # already in the repository
            new_tree = batch.edit_tree(tree, change.path.split("/"), blob)
            author = _signature(change.author.name, change.author.email, "GIT_AUTHOR_DATE")
            data = git_pack.commit_data(
                new_tree, [parent] if parent is not None else [], author, committer, change.message
            )
            parent = batch.add(git_pack.COMMIT, data)
            self._commit_trees[parent] = new_tree
            tree = new_tree
            built.append((change, parent.hex()))
        if not built or parent is None:
            return None, built
        try:
            batch.write_pack(self.git_dir / "objects" / "pack", flush_folder=flush_folder)
        except OSError as error:
            raise self._failed("storing the tenant files failed", redact(str(error))) from None
        self._packs_written += 1
        return pygit2.Oid(raw=parent), built

    def _sync_loose(self, objects: list[pygit2.Oid]) -> None:
        """Flush the loose files of ``objects`` (the first commit's, written by libgit2) and their
        folders. An object already stored before has no new file: nothing to do."""
        folders: list[Path] = []
        for oid in dict.fromkeys(objects):
            name = str(oid)
            path = self.git_dir / "objects" / name[:2] / name[2:]
            if durable.sync_file(path):
                folders.append(path.parent)
        durable.sync_folders([*folders, self.git_dir / "objects"])

    def _push(self, tip: pygit2.Oid) -> None:
        try:
            self._run("push", "--quiet", "--porcelain", "origin", f"{tip}:refs/heads/{self.branch}")
        except RepositoryError as error:
            before = self._base()
            after = self._fetch()  # an unreachable remote raises from here
            if after == before:
                raise  # the remote did not move: the push failed for another reason (git's text logged)
            raise _Moved() from error

    def _failed(self, message: str, detail: str = "") -> RepositoryError:
        """Log git's own text (``detail``, credentials redacted); the error to raise for callers."""
        _log.error("tenants repository: %s: %s", message, detail or "no detail")
        return RepositoryError(message)

    def _after_failure(self) -> None:
        """After a failed write: forget the health verdict and put the checkout back (best effort)."""
        self._health = None
        try:
            self.recover()
        except Exception as error:  # the next write or readiness check tries again
            _log.warning("recovering the tenants checkout failed: %s", error)

    def _refresh_view(self) -> None:
        if self._view_delay <= 0:
            self._update_working_copy()
            return
        self._view_behind.set()
        if self._view_thread is None:
            self._view_thread = threading.Thread(target=self._follow_view, name="tenants-view", daemon=True)
            self._view_thread.start()

    def _follow_view(self) -> None:
        while True:
            self._view_behind.wait()
            time.sleep(self._view_delay)
            self._view_behind.clear()
            with self._committing():
                self._update_working_copy()

    def _update_working_copy(self, *, clean: bool = False) -> None:
        """Make the working copy the branch's commit (for people; the service never reads it). A lock
        left in the way only delays the view: the commit is already published."""
        try:
            repo = self._git()
            tip = self._tip()
            if tip is None:
                return
            commit = repo[tip]
            strategy = CheckoutStrategy.FORCE
            if clean:
                strategy |= CheckoutStrategy.REMOVE_UNTRACKED
            assert isinstance(commit, pygit2.Commit)
            repo.checkout_tree(commit, strategy=strategy, paths=[self.tenants_path])
            if clean:
                repo.index.read_tree(commit.tree)
                repo.index.write()
        except (pygit2.GitError, OSError, RepositoryError) as error:
            _log.warning("the tenants working copy could not be updated: %s", redact(str(error)))

    def _run(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = ["git", "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", *args]
        environment = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
        try:
            result = subprocess.run(
                command,
                cwd=cwd or self.root,
                env=environment,
                capture_output=True,
                text=True,
                timeout=_GIT_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            _log.error("git %s could not run: %s", args[0], redact(str(error)))
            raise RepositoryError(f"git {args[0]} could not run: {type(error).__name__}") from None
        if result.returncode == 0:
            return result
        said = redact(" ".join(result.stderr.split()))[-1000:] or "no message"
        _log.error("git %s failed (exit %d): %s", args[0], result.returncode, said)
        raise RepositoryError(f"git {args[0]} failed (exit {result.returncode})")


class PushTurn(Protocol):
    """A replica's turn at pushing to the shared remote (``TenantRepository.push_turn``)."""

    last_pushed: str | None  # the tip the last replica to push left, when known

    def pushed(self, tip: str) -> None:
        """Record ``tip`` as what this replica pushed (best effort)."""
        ...


class WriteTurn:
    """A writer's turn at one tenant (``TenantRepository.turn``): read, check, place the change
    (``write_file``), let the next writer in (``release``), wait for the flushes (``durable``), queue
    the operation in commit order (``in_order``). Without ``pipelined`` the tenant stays held until
    the turn ends, as ``locked`` always held it."""

    def __init__(
        self, repository: TenantRepository, slot: _TenantSlot, pipelined: bool, after: _Write | None
    ):
        self._repository = repository
        self._slot = slot
        self._pipelined = pipelined
        self._after = after  # the newest write of this process on the tenant, flushed or not
        self._holding = True  # ``slot.mutex``
        self._write: _Write | None = None
        self._waited = False

    def _after_of(self, path: str) -> _Write | None:
        after = self._after
        return after if after is not None and after.path == path else None

    def file(self, environment: str, name: str) -> TenantFile | None:
        """The file as the newest write of this process left it (what this writer builds on), flushed
        or not; else as the branch has it. Never served to readers: they read the branch."""
        after = self._after_of(self._repository._relative(environment, name))
        return after.file if after is not None else self._repository.file(environment, name)

    def write_file(
        self,
        environment: str,
        name: str,
        document: dict[str, Any],
        *,
        author: GitAuthor,
        message: str,
        follow_up: object | None = None,
    ) -> TenantFile:
        """Place the commit of the tenant's file after every change placed before it (nothing when it
        is unchanged); the file as committed. ``durable`` tells whether it was recorded. ``follow_up``:
        handed to ``after_publish`` with the commit, when there is one."""
        assert self._write is None and self._holding, "one write per turn, before release"
        repository = self._repository
        path = repository._relative(environment, name)
        content, blob, written = repository._prepared(document)
        after = self._after_of(path)
        if after is not None:
            expected: pygit2.Oid | None = after.blob
        else:
            expected = repository._blob_at_tip(path)
        basis = after.basis if after is not None else None
        change = None
        if expected != blob:
            change = _Change(
                path,
                blob,
                expected,
                author,
                _clean_message(message),
                content=content,
                after=basis,
                follow_up=follow_up,
            )
            basis = change
        self._write = _Write(path, written, blob, change, basis)
        with self._slot.guard:
            self._slot.last = self._write
        if change is not None:
            repository._place(change)
        return written

    @property
    def placed(self) -> bool:
        """Whether this turn's write placed a change (a commit to come); False: the file was already so."""
        return self._write is not None and self._write.change is not None

    def release(self) -> None:
        """Pipelined: the next writer of the tenant in this process may start, building on this
        writer's change. Otherwise nothing: the tenant is held until the turn ends."""
        if self._pipelined and self._holding:
            self._holding = False
            self._slot.mutex.release()

    def durable(self) -> str | None:
        """Wait until this write's change and every change it was made on are flushed (pack, folder,
        branch), leading a group if no one is; its commit (None: unchanged). Raises the change's error,
        or that of an earlier change it was made on (which the branch no longer has)."""
        write = self._write
        assert write is not None
        change = write.change
        if change is not None:
            self._waited = True
            self._repository._publish(change)
            if change.error is not None:
                raise change.error
            return change.commit
        if write.basis is not None:  # unchanged, but on a change that may not be flushed yet
            write.basis.settled.wait()
            if write.basis.error is not None:
                raise _dependent_error(write.path, write.basis.error)
        return None

    def in_order(self, submit: Callable[[Callable[[], None]], _T]) -> _T:
        """``submit(queued)`` once the write before this one has its operation's place in the queue, so
        the queue's order of a tenant's operations is its commit order. ``submit`` calls ``queued``
        when its own place is fixed (the SQLite queue, before its transaction commits: consecutive
        writers share it), or the next writer waits until it returns."""
        write = self._write
        assert write is not None
        after = self._after_of(write.path)
        if after is not None:
            after.queued.wait()
        try:
            return submit(write.queued.set)
        finally:
            write.queued.set()

    def _end(self) -> None:
        slot = self._slot
        write = self._write
        try:
            if write is not None and write.change is not None and not self._waited:
                # Placed in the group's order but never waited for (an error in between): wait now,
                # since the lead may be handed to it and no group is published until it is taken.
                try:
                    self._repository._publish(write.change)
                except Exception as error:  # committing it failed: its writer is answered with an error
                    _log.warning("a placed change failed: %s", type(error).__name__)
        finally:
            if write is not None:
                write.queued.set()
            if self._holding:
                self._holding = False
                slot.mutex.release()
            with slot.guard:
                slot.users -= 1
                if slot.users == 0:  # every write of this process on the tenant flushed and queued
                    slot.last = None
                    if slot.descriptor is not None:
                        os.close(slot.descriptor)  # closing the file releases the flock
                        slot.descriptor = None
                slot.guard.notify_all()


def _plain(value: Any) -> bool:
    """Whether ``value`` is made of JSON's types only (mappings with string keys), finite numbers."""
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return value is None or isinstance(value, (str, int, bool))


def _wake_done(group: list[_Change]) -> None:
    for change in group:
        if change.done:
            change.after = None  # settled: what it was made on is no longer needed
            change.settled.set()
            change.wakeup.set()


def _dependent_error(path: str, error: RepositoryError) -> RepositoryError:
    """The error of a change made on an earlier change of ``path`` that failed (``error``)."""
    if isinstance(error, ConflictError):
        return ConflictError(f"{path} changed while this change was being written; read it again and retry")
    return RepositoryError(f"an earlier change of {path}, which this change was made on, was not recorded")


class _Moved(Exception):
    """The branch (or the remote's) moved between building a group and publishing it."""


_RAW_DATE = re.compile(r"^@?(\d+)(?: ([+-])(\d\d)(\d\d))?$")


def _signature(name: str, email: str, date_variable: str) -> pygit2.Signature:
    """A signature dated now, or by git's own ``GIT_*_DATE`` in its raw form (``@<epoch> +0000``), as
    ``git commit`` honours it."""
    match = _RAW_DATE.match(os.environ.get(date_variable, "").strip())
    if match is None:
        return pygit2.Signature(name, email)
    offset = 0
    if match[2]:
        offset = (int(match[3]) * 60 + int(match[4])) * (-1 if match[2] == "-" else 1)
    return pygit2.Signature(name, email, int(match[1]), offset)


def _clean_message(message: str) -> str:
    """What ``git commit`` would record: no trailing blanks, one final newline."""
    lines = [line.rstrip() for line in message.strip().splitlines()]
    return "\n".join(lines) + "\n"


def _open_lock_file(path: Path) -> int:
    """A descriptor of the lock file at ``path`` (created, with its folder, if missing): one system
    call in the usual case, where a Python file object and an up-front mkdir cost several."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o644)


def _lock_file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key) if key != "*" else "repository"


def _subtree(tree: pygit2.Tree, path: str) -> pygit2.Tree | None:
    try:
        entry = tree[path]
    except KeyError:
        return None
    return entry if isinstance(entry, pygit2.Tree) else None


def _edit_tree(
    repo: pygit2.Repository,
    tree: pygit2.Oid | None,
    parts: list[str],
    blob: pygit2.Oid | None,
    written: list[pygit2.Oid] | None = None,
) -> pygit2.Oid:
    """The tree ``tree`` with the file at ``parts`` set to ``blob`` (removed when None); folders left
    empty disappear, as with ``git rm``. ``written`` collects every tree stored on the way."""
    edited = _edit(repo, tree, parts, blob, written)
    if edited is None:
        edited = repo.TreeBuilder().write()
        if written is not None:
            written.append(edited)
    return edited


def _edit(
    repo: pygit2.Repository,
    tree: pygit2.Oid | None,
    parts: list[str],
    blob: pygit2.Oid | None,
    written: list[pygit2.Oid] | None = None,
) -> pygit2.Oid | None:
    existing = repo[tree] if tree is not None else None
    builder = repo.TreeBuilder(existing) if existing is not None else repo.TreeBuilder()  # type: ignore[arg-type]
    head, rest = parts[0], parts[1:]
    if not rest:
        if blob is None:
            if builder.get(head) is not None:
                builder.remove(head)
        else:
            builder.insert(head, blob, FileMode.BLOB)
    else:
        entry = builder.get(head)
        below = entry.id if entry is not None and entry.type_str == "tree" else None
        edited = _edit(repo, below, rest, blob, written)
        if edited is None:
            if entry is not None:
                builder.remove(head)
        else:
            builder.insert(head, edited, FileMode.TREE)
    if len(builder) == 0:
        return None
    stored = builder.write()
    if written is not None:
        written.append(stored)
    return stored
