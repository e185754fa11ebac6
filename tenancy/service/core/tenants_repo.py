"""The tenants git repository: the one module that talks to git.

Git is the source of truth for what each tenant asked for: every change through the API is a commit
of ``<tenants_path>/<env>/<name>.yaml`` authored by the caller (the service is only the committer),
so ``git log`` answers who changed what and when, and a pull request can make the same change.

Commits are serialized by a lock held in-process and, for other processes on the same checkout,
on a file in the git directory. When a remote is configured every commit is pushed; if the remote
moved, the change is rebased and pushed again, so concurrent writers never lose an update.

The checkout holds no work of its own: a write that cannot be pushed is rolled back to where it
started (aborting a half-done rebase), and ``sync`` resets the checkout to the remote's branch, so a
network blip never leaves a commit behind that the API reported as failed. Reads refresh from the
remote at most every ``refresh_seconds``, so a replica sees what other replicas and merged pull
requests committed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tenancy.spec.tree import ENVIRONMENTS

COMMITTER_NAME = "tenant-api"
COMMITTER_EMAIL = "tenant-api@tenancy.invalid"
_GIT_TIMEOUT_SECONDS = 60
_RETRIES = 5
_PUSH_ATTEMPTS = 12
_HEALTH_CACHE_SECONDS = 5.0  # /readyz is unauthenticated: at most one git process per this interval
_UNSAFE_IN_IDENTITY = re.compile(r"[<>\n\r\0]")
_SHA = re.compile(r"^[0-9a-f]{40,64}$")
_log = logging.getLogger("tenancy.service")
# libyaml's loader when PyYAML was built with it: reads are on every GET, and it is ~10x faster.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RepositoryError(Exception):
    """git failed in a way retrying did not fix; the message names the step, never file contents."""


@dataclass(frozen=True)
class GitAuthor:
    name: str
    email: str

    @classmethod
    def of(cls, display_name: str, email: str | None, subject: str) -> GitAuthor:
        name = _UNSAFE_IN_IDENTITY.sub("", display_name).strip() or "unknown"
        local = re.sub(r"[^A-Za-z0-9._-]", "-", subject)[:64] or "unknown"
        address = email if email and not _UNSAFE_IN_IDENTITY.search(email) else f"{local}@tenant-api.invalid"
        return cls(name=name[:100], email=address)


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


def parse_document(text: str) -> dict[str, Any]:
    """A tenant file's mapping ({} for anything else: validation reports it properly)."""
    try:
        document = yaml.load(text, Loader=_YAML_LOADER)  # a safe loader (C or Python)
    except yaml.YAMLError:
        return {}
    return document if isinstance(document, dict) else {}


class TenantRepository:
    def __init__(
        self,
        root: Path,
        *,
        tenants_path: str = "tenants",
        remote: str | None = None,
        branch: str = "main",
        refresh_seconds: float = 5.0,
    ) -> None:
        self.root = root
        self.tenants_path = tenants_path
        self.tenants_dir = root / tenants_path
        self.remote = remote
        self.branch = branch
        self.refresh_seconds = refresh_seconds
        self._lock = threading.RLock()
        self._synced_at = float("-inf")  # never synced: the first read refreshes
        self._health: tuple[float, bool] | None = None
        self._creations_lock = threading.Lock()
        self._creations_head = ""
        self._creations: dict[tuple[str, str], Creation | None] = {}

    # --- setup ---------------------------------------------------------------------------------------

    def ensure(self, *, seed_from: Path | None = None) -> None:
        """Create the repository (optionally with the tenant files of ``seed_from``) unless it exists;
        with a remote, clone it, or bring an existing checkout up to date (and clean) with it."""
        with self._lock:
            if (self.root / ".git").exists():
                if self.remote is not None:
                    try:
                        self.sync()
                    except RepositoryError as error:  # serve what the checkout has; reads retry
                        _log.warning("could not bring the tenants checkout up to date: %s", error)
                return
            if self.remote is not None:
                self.root.parent.mkdir(parents=True, exist_ok=True)
                self._run(
                    "clone", "--quiet", "--branch", self.branch, self.remote, str(self.root), cwd=Path("/")
                )
                self._synced_at = time.monotonic()
                return
            self.root.mkdir(parents=True, exist_ok=True)
            self._run("init", "--quiet", "--initial-branch", self.branch)
            self.tenants_dir.mkdir(parents=True, exist_ok=True)
            if seed_from is not None and seed_from.is_dir():
                for environment in ENVIRONMENTS:
                    for source in sorted((seed_from / environment).glob("*.yaml")):
                        target = self.tenants_dir / environment / source.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(source, target)
            readme = self.tenants_dir / "README.md"
            readme.write_text(
                "# Tenants\n\nOne file per tenant: `<env>/<name>.yaml`, "
                "written by the tenant API and by pull requests.\n",
                encoding="utf-8",
            )
            self._run("add", "--", str(self.tenants_dir))
            self._commit(
                "Initialise the tenants repository", GitAuthor(COMMITTER_NAME, COMMITTER_EMAIL), None
            )

    def healthy(self) -> bool:
        """Whether git can read the checkout; cached for a few seconds (readiness probes are free)."""
        now = time.monotonic()
        cached = self._health
        if cached is not None and now - cached[0] < _HEALTH_CACHE_SECONDS:
            return cached[1]
        try:
            self._run("rev-parse", "--verify", "--quiet", "HEAD")
            healthy = True
        except RepositoryError:
            healthy = False
        self._health = (now, healthy)
        return healthy

    # --- reads ---------------------------------------------------------------------------------------

    def path_of(self, environment: str, name: str) -> Path:
        return self.tenants_dir / environment / f"{name}.yaml"

    def read_text(self, environment: str, name: str) -> str | None:
        self.refresh()
        return self._read_text(environment, name)

    def _read_text(self, environment: str, name: str) -> str | None:
        try:
            return self.path_of(environment, name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def read(self, environment: str, name: str) -> dict[str, Any] | None:
        text = self.read_text(environment, name)
        return None if text is None else parse_document(text)

    def names(self) -> list[tuple[str, str]]:
        """(environment, name) of every tenant file."""
        self.refresh()
        found = []
        for environment in ENVIRONMENTS:
            folder = self.tenants_dir / environment
            if folder.is_dir():
                found += [(environment, path.stem) for path in sorted(folder.glob("*.yaml"))]
        return found

    def creation(self, environment: str, name: str) -> Creation | None:
        """The commit that last created the tenant's file (also once it is deleted again); None if the
        file never existed. Cached until HEAD moves, so API-key checks cost no git process."""
        head = self._head()
        key = (environment, name)
        with self._creations_lock:
            if head != self._creations_head or not head:
                self._creations = {}
                self._creations_head = head
            if key in self._creations:
                return self._creations[key]
        output = self._run(
            "log", "-n1", "--diff-filter=A", "--format=%H %ct", "--", str(self.path_of(environment, name))
        ).stdout.split()
        found = Creation(sha=output[0], time=float(output[1])) if len(output) == 2 else None
        with self._creations_lock:
            if head == self._creations_head:
                self._creations[key] = found
        return found

    def _head(self) -> str:
        """HEAD's commit, read from the git directory's files (no process); "" when unreadable."""
        git_dir = self.root / ".git"
        try:
            head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
            if not head.startswith("ref: "):
                return head if _SHA.match(head) else ""
            ref = head.removeprefix("ref: ")
            loose = git_dir / ref
            if loose.is_file():
                sha = loose.read_text(encoding="utf-8").strip()
                return sha if _SHA.match(sha) else ""
            for line in (git_dir / "packed-refs").read_text(encoding="utf-8").splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and _SHA.match(sha):
                    return sha
        except OSError:
            pass
        return ""

    def history(self, environment: str, name: str) -> list[Commit]:
        """Commits that touched the tenant's file, newest first."""
        output = self._run(
            "log", "--format=%H%x1f%an%x1f%ae%x1f%s", "--", str(self.path_of(environment, name))
        ).stdout
        commits = []
        for line in output.splitlines():
            sha, author_name, author_email, subject = line.split("\x1f", 3)
            commits.append(Commit(sha, author_name, author_email, subject))
        return commits

    # --- writes --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the repository for a read-modify-commit sequence (this process and others on the checkout)."""
        with self._lock:
            git_dir = self.root / ".git"
            git_dir.mkdir(parents=True, exist_ok=True)
            with open(git_dir / "tenant-api.lock", "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def sync(self) -> None:
        """Make the checkout exactly the remote's branch (no-op without a remote): the service keeps
        no local-only work, so whatever an earlier failure left (a commit that was never pushed, a
        half-done rebase, a stray file) is dropped rather than published later."""
        if self.remote is None:
            return
        with self._lock:
            self._abort_rebase()
            self._run(
                "fetch", "--quiet", "origin", f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}"
            )
            self._run("reset", "--quiet", "--hard", f"refs/remotes/origin/{self.branch}")
            self._run("clean", "--quiet", "-fd", "--", self.tenants_path)
            self._synced_at = time.monotonic()

    def refresh(self, *, max_age: float | None = None) -> None:
        """Sync when the checkout is older than ``max_age`` (default ``refresh_seconds``), for reads.
        Never waits: while another thread or process writes, readers use the checkout as it is (that
        write syncs it anyway). A remote that cannot be reached leaves the checkout as it was."""
        if self.remote is None:
            return
        age = self.refresh_seconds if max_age is None else max_age
        if time.monotonic() - self._synced_at < age:
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self._synced_at < age:
                return  # another reader refreshed while this one waited for the lock
            with self._locked_without_waiting() as held:
                if held:
                    try:
                        self.sync()
                    except RepositoryError as error:
                        self._synced_at = time.monotonic()  # do not hammer an unreachable remote
                        _log.warning("refreshing the tenants checkout failed: %s", error)
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def _locked_without_waiting(self) -> Iterator[bool]:
        """The cross-process file lock if it is free right now (True), else nothing (False)."""
        git_dir = self.root / ".git"
        with open(git_dir / "tenant-api.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write(
        self, environment: str, name: str, document: dict[str, Any], *, author: GitAuthor, message: str
    ) -> str | None:
        """Write, commit and push the tenant's file; return the commit, or None when nothing changed.
        On failure the checkout is back where it started and the error is raised."""
        path = self.path_of(environment, name)
        text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)
        with self._lock:
            previous = self._read_text(environment, name)
            if previous == text:
                return None
            before = self._head_or_none()
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".yaml.tmp")
            try:
                temporary.write_text(text, encoding="utf-8")
                os.replace(temporary, path)
                self._run("add", "--", str(path))
                return self._commit(message, author, path)
            except (RepositoryError, OSError):
                self._roll_back(before, path, previous)
                raise

    def delete(self, environment: str, name: str, *, author: GitAuthor, message: str) -> str | None:
        path = self.path_of(environment, name)
        with self._lock:
            previous = self._read_text(environment, name)
            if previous is None:
                return None
            before = self._head_or_none()
            try:
                self._run("rm", "--quiet", "--", str(path))
                return self._commit(message, author, path)
            except RepositoryError:
                self._roll_back(before, path, previous)
                raise

    def _head_or_none(self) -> str | None:
        try:
            return self._run("rev-parse", "--verify", "--quiet", "HEAD").stdout.strip() or None
        except RepositoryError:
            return None

    def _roll_back(self, before: str | None, path: Path, previous: str | None) -> None:
        """Put the checkout back exactly where the failed write started: no half-done rebase, no
        local commit the API reported as failed, the file as it was."""
        with contextlib.suppress(RepositoryError, OSError):
            self._abort_rebase()
        with contextlib.suppress(RepositoryError, OSError):
            if before is not None:
                self._run("reset", "--quiet", "--hard", before)
            else:
                self._run("reset", "--quiet", "--", str(path))
        with contextlib.suppress(OSError):
            path.with_suffix(".yaml.tmp").unlink(missing_ok=True)
            if previous is None:
                path.unlink(missing_ok=True)  # never tracked, so reset leaves it behind
            elif before is None:
                path.write_text(previous, encoding="utf-8")

    def _abort_rebase(self) -> None:
        git_dir = self.root / ".git"
        if (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists():
            try:
                self._run("rebase", "--abort")
            except RepositoryError:
                self._run("rebase", "--quit")  # forget it; the reset that follows restores the files

    def _commit(self, message: str, author: GitAuthor, path: Path | None) -> str:
        env = {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": COMMITTER_NAME,
            "GIT_COMMITTER_EMAIL": COMMITTER_EMAIL,
        }
        paths = ["--", str(path)] if path is not None else []
        self._run("commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message, *paths, env=env)
        self._push()
        # After the push: a rebase onto what other replicas pushed gives the commit a new id.
        return self._run("rev-parse", "HEAD").stdout.strip()

    def _push(self) -> None:
        if self.remote is None:
            return
        for attempt in range(_PUSH_ATTEMPTS):
            try:
                self._run("push", "--quiet", "origin", f"HEAD:{self.branch}")
                return
            except RepositoryError:
                if attempt == _PUSH_ATTEMPTS - 1:
                    raise
                # The remote moved (another replica or a merged pull request): replay our commit on
                # top, after a random pause so replicas that collided do not collide again in step.
                time.sleep(random.uniform(0, min(0.05 * 2**attempt, 1.0)))
                try:
                    self._run("pull", "--quiet", "--rebase", "origin", self.branch)
                except RepositoryError:
                    # Unreachable, or a conflict (a merged pull request changed the same file): never
                    # leave the checkout mid-rebase. The caller rolls the write back.
                    with contextlib.suppress(RepositoryError):
                        self._abort_rebase()
                    raise
                self._synced_at = time.monotonic()

    def _run(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = ["git", "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", *args]
        environment = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
        for attempt in range(_RETRIES):
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
                raise RepositoryError(f"git {args[0]} could not run: {type(error).__name__}") from None
            if result.returncode == 0:
                return result
            # Someone else (a person, another tool) holds the index: wait briefly and try again.
            if "index.lock" in result.stderr and attempt < _RETRIES - 1:
                time.sleep(0.05 * 2**attempt)
                continue
            raise RepositoryError(f"git {args[0]} failed (exit {result.returncode})")
        raise RepositoryError(f"git {args[0]} failed")
