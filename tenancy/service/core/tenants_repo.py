"""The tenants git repository: the one module that talks to git.

Git is the source of truth for what each tenant asked for: every change through the API is a commit
of ``<tenants_path>/<env>/<name>.yaml`` authored by the caller (the service is only the committer),
so ``git log`` answers who changed what and when, and a pull request can make the same change.

Commits are serialized by a lock held in-process and, for other processes on the same checkout,
on a file in the git directory. When a remote is configured every commit is pushed; if the remote
moved, the change is rebased and pushed again, so concurrent writers never lose an update.
"""

from __future__ import annotations

import contextlib
import fcntl
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
_UNSAFE_IN_IDENTITY = re.compile(r"[<>\n\r\0]")
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
        self, root: Path, *, tenants_path: str = "tenants", remote: str | None = None, branch: str = "main"
    ) -> None:
        self.root = root
        self.tenants_dir = root / tenants_path
        self.remote = remote
        self.branch = branch
        self._lock = threading.RLock()

    # --- setup ---------------------------------------------------------------------------------------

    def ensure(self, *, seed_from: Path | None = None) -> None:
        """Create the repository (optionally with the tenant files of ``seed_from``) unless it exists."""
        with self._lock:
            if (self.root / ".git").exists():
                return
            if self.remote is not None:
                self.root.parent.mkdir(parents=True, exist_ok=True)
                self._run(
                    "clone", "--quiet", "--branch", self.branch, self.remote, str(self.root), cwd=Path("/")
                )
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
        try:
            self._run("rev-parse", "--verify", "--quiet", "HEAD")
        except RepositoryError:
            return False
        return True

    # --- reads ---------------------------------------------------------------------------------------

    def path_of(self, environment: str, name: str) -> Path:
        return self.tenants_dir / environment / f"{name}.yaml"

    def read_text(self, environment: str, name: str) -> str | None:
        try:
            return self.path_of(environment, name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def read(self, environment: str, name: str) -> dict[str, Any] | None:
        text = self.read_text(environment, name)
        return None if text is None else parse_document(text)

    def names(self) -> list[tuple[str, str]]:
        """(environment, name) of every tenant file."""
        found = []
        for environment in ENVIRONMENTS:
            folder = self.tenants_dir / environment
            if folder.is_dir():
                found += [(environment, path.stem) for path in sorted(folder.glob("*.yaml"))]
        return found

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
        """Bring the checkout up to date with the remote (no-op without one)."""
        if self.remote is not None:
            self._run("pull", "--quiet", "--rebase", "origin", self.branch)

    def write(
        self, environment: str, name: str, document: dict[str, Any], *, author: GitAuthor, message: str
    ) -> str | None:
        """Write and commit the tenant's file; return the commit, or None when nothing changed."""
        path = self.path_of(environment, name)
        text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)
        with self._lock:
            previous = self.read_text(environment, name)
            if previous == text:
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".yaml.tmp")
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, path)
            try:
                self._run("add", "--", str(path))
                return self._commit(message, author, path)
            except RepositoryError:
                self._restore(path, previous)
                raise

    def delete(self, environment: str, name: str, *, author: GitAuthor, message: str) -> str | None:
        path = self.path_of(environment, name)
        with self._lock:
            previous = self.read_text(environment, name)
            if previous is None:
                return None
            try:
                self._run("rm", "--quiet", "--", str(path))
                return self._commit(message, author, path)
            except RepositoryError:
                self._restore(path, previous)
                raise

    def _restore(self, path: Path, previous: str | None) -> None:
        """Put the working tree back after a failed commit, so the file matches HEAD again."""
        with contextlib.suppress(RepositoryError, OSError):
            self._run("reset", "--quiet", "--", str(path))
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(previous, encoding="utf-8")

    def _commit(self, message: str, author: GitAuthor, path: Path | None) -> str:
        env = {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": COMMITTER_NAME,
            "GIT_COMMITTER_EMAIL": COMMITTER_EMAIL,
        }
        paths = ["--", str(path)] if path is not None else []
        self._run("commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message, *paths, env=env)
        sha = self._run("rev-parse", "HEAD").stdout.strip()
        self._push()
        return sha

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
                self._run("pull", "--quiet", "--rebase", "origin", self.branch)

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
