"""The README, executed: from a fresh clone, every shell command it shows, verbatim, in order, with
what a user would then see checked (see tests/journeys/journeys.py for each command's step)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR
from tests.journeys.conftest import ReadmeClone
from tests.journeys.journeys import pulumi_cli_present, run_section, step_for
from tests.journeys.readme import readme_commands

# The first journey test pays for the session's set-up (a virtualenv and a pip install).
pytestmark = pytest.mark.timeout(1800)


def test_every_readme_command_is_run_by_a_journey() -> None:
    commands = readme_commands(PROJECT_DIR / "README.md")
    assert len(commands) >= 20, commands  # the extraction found the README's blocks
    for command in commands:
        step_for(command)


def test_quick_start_sets_up_a_fresh_clone(readme_clone: ReadmeClone) -> None:
    # The session fixture ran the Quick start, verbatim, and checked each step.
    assert (readme_clone.root / ".venv" / "bin" / "tenantctl").is_file()
    assert readme_clone.shell.env["VIRTUAL_ENV"] == str(readme_clone.root / ".venv")


def test_render_and_policy_as_written(readme_clone: ReadmeClone, tmp_path: Path) -> None:
    run_section(readme_clone.journey(tmp_path), readme_clone.section("Render, schema and policy"))


@pytest.mark.skipif(pulumi_cli_present(), reason="with the CLI these need a backend and a cluster")
def test_pulumi_commands_need_the_pulumi_cli(readme_clone: ReadmeClone, tmp_path: Path) -> None:
    run_section(readme_clone.journey(tmp_path), readme_clone.section("Running it on a real cluster"))


@pytest.mark.skipif(pulumi_cli_present(), reason="with the CLI these need a backend and a cluster")
def test_automation_commands_exit_4_without_the_pulumi_cli(readme_clone: ReadmeClone, tmp_path: Path) -> None:
    run_section(readme_clone.journey(tmp_path), readme_clone.section("Automation and `tenantctl`"))


def test_self_service_serve_token_create_follow_read_back_request_approve(
    readme_clone: ReadmeClone, tmp_path: Path
) -> None:
    journey = readme_clone.journey(tmp_path)
    try:
        run_section(journey, readme_clone.section("Self-service HTTP API"))
    finally:
        journey.shell.stop_background()
    log = journey.facts["serve_log"].read_text(encoding="utf-8")
    assert "Traceback" not in log, log
    assert journey.shell.env["TOKEN"] not in log  # the token never reaches the log
    history = journey.shell.run(
        "git -C .tenancy/tenants-repo log --format='%ae %s' -- tenants/dev/newco.yaml", timeout=30
    )
    # Created by its tenant-admin; the plan change committed by the platform-admin who approved it;
    # the key rotation committed by the tenant-admin who asked for it.
    assert history.stdout.splitlines() == [
        "me@newco.example Rotate the Qdrant keys of tenant dev.newco (generation 1)",
        "root@tenant-api.invalid Update tenant dev.newco",
        "me@newco.example Create tenant dev.newco",
    ], history.explain()
    # The approved change names who asked for it and who approved it (the README's two subjects).
    approved = journey.shell.run(
        "git -C .tenancy/tenants-repo log -1 --skip=1 --format=%B -- tenants/dev/newco.yaml", timeout=30
    )
    assert "Requested-by: user:me\nApproved-by: user:root\n" in approved.stdout, approved.explain()


def test_portal_is_served_where_the_readme_says(readme_clone: ReadmeClone, tmp_path: Path) -> None:
    journey = readme_clone.journey(tmp_path)
    try:
        run_section(journey, readme_clone.section("The portal (browser)"))
    finally:
        journey.shell.stop_background()
    log = journey.facts["serve_log"].read_text(encoding="utf-8")
    assert "Traceback" not in log, log
