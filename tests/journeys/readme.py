"""The README's shell commands, read from its code blocks, and a shell to run them in as a user would.

Commands come from fenced ``bash``/``sh``/``shell`` blocks only (``yaml``, ``dotenv`` and plain blocks
are examples, not commands). A line ending in ``\\`` continues on the next; comment-only lines are
output shown to the reader. Each command keeps its exact text, trailing comment included: the test
runs what a user pastes.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell"})
_FENCE = re.compile(r"^\s*```(?P<lang>[\w+-]*)\s*$")
# Variables a user's login shell would not have, or that would point the clone at this checkout.
_NOT_A_USERS = re.compile(r"^(TENANCY_|PULUMI_|PYTEST_|VIRTUAL_ENV$|PYTHONPATH$|PYTHONHOME$|BASH_FUNC_)")


@dataclass(frozen=True)
class ReadmeCommand:
    section: str  # the level-2 heading it is under
    line: int  # 1-based line of its first line in the README
    text: str  # exactly as written (continuation lines included)

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.section}): {self.text}"


def readme_commands(readme: Path) -> list[ReadmeCommand]:
    """Every shell command of the README's shell code blocks, in order."""
    commands: list[ReadmeCommand] = []
    section = ""
    language: str | None = None  # inside a block: its language
    pending: list[str] = []
    start = 0
    for number, line in enumerate(readme.read_text(encoding="utf-8").splitlines(), start=1):
        fence = _FENCE.match(line)
        if language is None:
            if line.startswith("## "):
                section = line.removeprefix("## ").strip()
            elif fence:
                language = fence.group("lang") or "text"
            continue
        if fence and not fence.group("lang"):
            assert not pending, f"README.md:{start}: a command continues past the end of its block"
            language = None
            continue
        if language not in SHELL_LANGUAGES:
            continue
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not pending:
            start = number
        pending.append(line)
        if not line.rstrip().endswith("\\"):
            commands.append(ReadmeCommand(section, start, "\n".join(pending)))
            pending = []
    return commands


def users_environment(*, drop_path_entries: tuple[Path, ...] = ()) -> dict[str, str]:
    """This process's environment as a user's fresh terminal would have it: no project settings, no
    active virtualenv (``drop_path_entries``: this checkout's own ``.venv/bin``)."""
    environment = {key: value for key, value in os.environ.items() if not _NOT_A_USERS.match(key)}
    dropped = {str(path) for path in drop_path_entries}
    environment["PATH"] = os.pathsep.join(
        entry for entry in environment.get("PATH", "").split(os.pathsep) if entry and entry not in dropped
    )
    return environment


@dataclass
class Completed:
    command: str
    returncode: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return f"$ {self.command}\nexit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@dataclass
class Shell:
    """One terminal: commands run with ``bash`` in ``cwd``; what a command exports (``export X=``,
    ``. .venv/bin/activate``, and plain ``X=...`` assignments, as a user's next command in the same
    terminal would see them) carries over to the next command."""

    cwd: Path
    env: dict[str, str]
    background: list[subprocess.Popen[str]] = field(default_factory=list)

    def copy(self) -> Shell:
        return Shell(self.cwd, dict(self.env))

    def run(self, command: str, *, timeout: float) -> Completed:
        with tempfile.NamedTemporaryFile(prefix="readme-env-", delete=False) as handle:
            env_file = Path(handle.name)
        # set -a: assignments are exported, so the environment dump below carries them over.
        script = f'set -a\n{command}\n__status=$?\nenv -0 > "{env_file}"\nexit $__status\n'
        try:
            done = subprocess.run(
                ["bash", "-c", script],
                cwd=self.cwd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if env_file.stat().st_size:
                self._carry_over(env_file.read_bytes())
        finally:
            env_file.unlink(missing_ok=True)
        return Completed(command, done.returncode, done.stdout, done.stderr)

    def _carry_over(self, dump: bytes) -> None:
        carried = {}
        for entry in dump.split(b"\0"):
            key, sep, value = entry.decode("utf-8", "surrogateescape").partition("=")
            if sep and key not in ("_", "SHLVL", "PWD", "OLDPWD") and not key.startswith("BASH_FUNC_"):
                carried[key] = value
        self.env = carried

    def start(self, command: str, log: IO[str]) -> subprocess.Popen[str]:
        """Run ``command`` in the background (its own process group), output to ``log``."""
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.background.append(process)
        return process

    def stop_background(self, *, grace: float = 20.0) -> None:
        """Stop what ``start`` started (its whole process group: bash and what it ran), as Ctrl-C would."""
        for process in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        for process in self.background:
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=grace)
        self.background.clear()


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
