"""A fresh clone of this repository's committed HEAD, set up once per session by the README's own
Quick start, run verbatim (it makes the virtualenv and pip-installs the project into it, using the
machine's pip cache), then activated as the README says."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR
from tests.journeys.journeys import Journey, run_section
from tests.journeys.readme import ReadmeCommand, Shell, readme_commands, users_environment

QUICK_START = "Quick start"


@dataclass
class ReadmeClone:
    root: Path
    commands: list[ReadmeCommand]  # from the clone's README: what was committed is what runs
    shell: Shell  # after the Quick start: the virtualenv made and active
    setup_chain: list[str]

    def section(self, heading: str) -> list[ReadmeCommand]:
        found = [command for command in self.commands if command.section.startswith(heading)]
        assert found, f"the README has no shell commands under a heading starting {heading!r}"
        return found

    def journey(self, log_dir: Path) -> Journey:
        """A new terminal in the clone, as the Quick start left it."""
        return Journey(self.root, self.shell.copy(), self.setup_chain, log_dir)


def clone_head(target: Path) -> Path:
    top = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", top, str(target)], check=True, capture_output=True, text=True)
    return target


@pytest.fixture(scope="session")
def readme_clone(tmp_path_factory: pytest.TempPathFactory) -> ReadmeClone:
    root = clone_head(tmp_path_factory.mktemp("readme") / "clone")
    this_venv = Path(sys.executable).parent
    shell = Shell(root, users_environment(drop_path_entries=(this_venv,)))
    commands = readme_commands(root / "README.md")
    quick_start = [command for command in commands if command.section.startswith(QUICK_START)]
    assert quick_start, "the README has no Quick start commands"
    chain = [part.strip() for part in quick_start[0].text.split("&&")]
    journey = Journey(root, shell, chain, tmp_path_factory.mktemp("quick-start"))
    run_section(journey, quick_start)
    return ReadmeClone(root=root, commands=commands, shell=journey.shell, setup_chain=chain)
