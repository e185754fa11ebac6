"""What each README command must do when a user runs it, section by section.

Every shell command in the README belongs to the section it is written under, and each section's
table names, by pattern, the step that runs the command verbatim and checks what a user would see.
A command that no pattern of its section matches (a new one, or a changed one) fails
``test_every_readme_command_is_run_by_a_journey`` and the section's journey: README and tests cannot
drift apart.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.journeys.readme import Completed, ReadmeCommand, Shell, port_is_free
from tests.ports import free_port

README_PORT = 8080  # what the README's serve command listens on by default
COMMAND_TIMEOUT_SECONDS = 300
SERVE_START_SECONDS = 180


@dataclass
class Journey:
    """One user's session in the clone: a terminal, and what earlier steps learned."""

    root: Path
    shell: Shell
    setup_chain: list[str]  # the Quick start's set-up command, split at &&
    log_dir: Path
    facts: dict[str, Any] = field(default_factory=dict)
    ran: list[Completed] = field(default_factory=list)

    def run(self, command: ReadmeCommand, *, timeout: float = COMMAND_TIMEOUT_SECONDS) -> Completed:
        done = self.shell.run(command.text, timeout=timeout)
        self.ran.append(done)
        return done


Step = Callable[[Journey, ReadmeCommand], None]


def pulumi_cli_present() -> bool:
    return shutil.which("pulumi") is not None


def without_comment(text: str) -> str:
    return re.sub(r"\s+#[^'\"]*$", "", text).strip()


# --- Quick start ----------------------------------------------------------------------------------


def set_up(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command, timeout=1500)
    assert done.returncode == 0, done.explain()
    assert (journey.root / ".venv" / "bin" / "tenantctl").is_file()
    assert re.search(r"\d+ tenant file\(s\) valid", done.stdout), done.explain()
    assert re.search(r"pass all \d+ policies", done.stdout), done.explain()
    assert (journey.root / "build" / "render" / "prod.acme" / "outputs.yaml").is_file()


def run_by_ci(journey: Journey, command: ReadmeCommand) -> None:
    # Running the test suite inside the test suite would recurse: CI runs exactly this line.
    ci = (journey.root / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command.text in ci, f"{command} is documented, but .ci/run does not run it verbatim"


def activate(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    found = journey.shell.run("command -v tenantctl", timeout=30)
    assert found.stdout.strip() == str(journey.root / ".venv" / "bin" / "tenantctl"), found.explain()


# --- commands the set-up chain already ran ---------------------------------------------------------


def run_by_setup(journey: Journey, command: ReadmeCommand) -> None:
    """A ``tenantctl`` command the Quick start's chain runs as ``.venv/bin/tenantctl`` (the same program
    with the same arguments, the virtualenv active here)."""
    assert f".venv/bin/{without_comment(command.text)}" in journey.setup_chain, (
        f"{command} is not part of the Quick start's set-up command: give it a step of its own"
    )


# --- Render, schema and policy --------------------------------------------------------------------


def render_one_stack(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    stack = re.search(r"--stack (\S+)", command.text)
    out = re.search(r"--out (\S+)", command.text)
    assert stack and out
    rendered = journey.root / out.group(1) / stack.group(1)
    assert (rendered / "outputs.yaml").is_file(), done.explain()
    assert any((rendered / "manifests").rglob("*.yaml"))


# --- Running it on a real cluster (the Pulumi CLI itself) -----------------------------------------


def pulumi_itself(journey: Journey, command: ReadmeCommand) -> None:
    """Without the CLI these fail as a shell says so (a test skips where the CLI is present: they need
    a backend and a cluster)."""
    done = journey.run(command)
    assert done.returncode == 127, done.explain()
    assert "pulumi: command not found" in done.stderr, done.explain()


# --- Automation and tenantctl ---------------------------------------------------------------------


def needs_the_pulumi_cli(journey: Journey, command: ReadmeCommand) -> None:
    """Exit 4, naming the version to install and how (the documented way, where the CLI is missing)."""
    done = journey.run(command)
    assert done.returncode == 4, done.explain()
    assert "the Pulumi CLI was not found on PATH" in done.stderr, done.explain()
    assert "Install Pulumi 3.272.0 or newer" in done.stderr, done.explain()


def list_stacks(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    assert "listing the local operation history only" in done.stderr, done.explain()
    assert "Traceback" not in done.stderr


def backups_need_a_bucket(journey: Journey, command: ReadmeCommand) -> None:
    """A fresh clone has no backup bucket: exit 2 naming the variable to set (or --url), nothing run."""
    done = journey.run(command)
    assert done.returncode == 2, done.explain()
    assert "no backup bucket configured: set TENANCY_SERVICE_BACKUP_BUCKET" in done.stderr, done.explain()
    assert "--url" in done.stderr and "Traceback" not in done.stderr, done.explain()


# --- Self-service HTTP API ------------------------------------------------------------------------


def serve(journey: Journey, command: ReadmeCommand) -> None:
    port = README_PORT
    if not port_is_free(port):  # someone else's service: the documented variable moves ours
        port = free_port()
        journey.shell.env["TENANCY_SERVICE_PORT"] = str(port)
    log_path = journey.log_dir / "serve.log"
    log = log_path.open("w", encoding="utf-8")
    journey.facts.update(port=port, serve_log=log_path)
    process = journey.shell.start(command.text, log)
    deadline = time.monotonic() + SERVE_START_SECONDS
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"{command} exited {process.returncode}:\n{log_path.read_text()}"
        assert time.monotonic() < deadline, f"{command} did not answer /readyz:\n{log_path.read_text()}"
        time.sleep(0.25)
    output = log_path.read_text(encoding="utf-8")
    assert f"tenants repository: {journey.root / '.tenancy' / 'tenants-repo'}" in output, output


def export_api(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    assert journey.shell.env.get("API") == f"http://127.0.0.1:{journey.facts['port']}"


def export_token(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    assert journey.shell.env.get("TOKEN", "").count(".") == 2, done.explain()


def print_token(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    assert done.stdout.strip().count(".") == 2, done.explain()


def create_tenant(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    created = json.loads(done.stdout)
    assert created["changed"] is True and created["commit"], done.explain()
    journey.facts["operation"] = created["operation"]["id"]
    assert journey.shell.env.get("CREATED"), "the next command reads the response from $CREATED"


def follow_events(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command, timeout=180)
    assert done.returncode == 0, done.explain()
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in done.stdout.splitlines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ").strip()
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    assert events and events[-1][0] == "end", done.explain()
    final = events[-1][1]
    assert final["id"] == journey.facts["operation"]
    if pulumi_cli_present():
        assert final["status"] in ("succeeded", "failed")
    else:
        assert (final["status"], final["summary"]["code"]) == ("failed", "pulumi_cli_missing"), final
        assert "Install Pulumi" in final["summary"]["error"]


def read_back(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    tenant = json.loads(done.stdout)
    assert (tenant["environment"], tenant["name"]) == ("dev", "newco"), tenant
    assert tenant["spec"]["owners"] == ["me@newco.example"]
    assert tenant["lastOperation"]["id"] == journey.facts["operation"]
    if not pulumi_cli_present():
        assert tenant["status"]["phase"] == "failed", tenant


def request_change(journey: Journey, command: ReadmeCommand) -> None:
    """A tenant-admin's plan change: a pending change request, nothing committed."""
    head = _tenants_head(journey)
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    requested = json.loads(done.stdout)["changeRequest"]
    assert requested["status"] == "pending" and requested["id"].startswith("cr-"), done.explain()
    assert requested["reason"] == "launch traffic", requested
    assert "plan" in {need["field"] for need in requested["needs"]}, requested
    assert _tenants_head(journey) == head, "a change request must commit nothing"
    journey.facts["change_request"] = requested["id"]
    assert journey.shell.env.get("REQUESTED"), "the next command reads the response from $REQUESTED"


def keep_request_id(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    assert journey.shell.env.get("REQUEST_ID") == journey.facts["change_request"], done.explain()


def export_cli_access(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    assert journey.shell.env.get("TENANCY_API_URL") == journey.shell.env["API"], done.explain()
    assert journey.shell.env.get("TENANCY_TOKEN", "").count(".") == 2, done.explain()


def list_requests(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    line = next(line for line in done.stdout.splitlines() if line.startswith(journey.facts["change_request"]))
    assert "pending" in line and "dev.newco" in line and "needs plan" in line, done.explain()


def show_request(journey: Journey, command: ReadmeCommand) -> None:
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    assert done.stdout.startswith(f"{journey.facts['change_request']}  dev.newco  pending"), done.explain()
    assert "reason: launch traffic" in done.stdout, done.explain()
    assert 'plan: "small" -> "medium"' in done.stdout, done.explain()


def approve_request(journey: Journey, command: ReadmeCommand) -> None:
    head = _tenants_head(journey)
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    assert done.stdout.startswith(f"approved {journey.facts['change_request']}: commit "), done.explain()
    assert _tenants_head(journey) != head, "approving commits the reviewed document"
    tenant = httpx.get(
        f"{journey.shell.env['API']}/api/v1/environments/dev/tenants/newco",
        headers={"Authorization": f"Bearer {journey.shell.env['TOKEN']}"},
        timeout=30,
    ).json()
    assert tenant["spec"]["plan"] == "medium", tenant


def reject_decided_request(journey: Journey, command: ReadmeCommand) -> None:
    """The README shows that a request is decided once: rejecting the approved one exits 2."""
    done = journey.run(command)
    assert done.returncode == 2, done.explain()
    assert done.stderr.startswith("error: change_request_decided: "), done.explain()


def rotate_keys(journey: Journey, command: ReadmeCommand) -> None:
    """A tenant-admin's rotation: committed (generation 1, two hours of grace) and an update queued."""
    head = _tenants_head(journey)
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    accepted = json.loads(done.stdout)
    assert accepted["changed"] is True and accepted["operation"]["kind"] == "up", done.explain()
    assert _tenants_head(journey) != head, "a rotation commits the next key generation"
    status = httpx.get(
        f"{journey.shell.env['API']}/api/v1/environments/dev/tenants/newco/qdrant/keys/rotate",
        headers={"Authorization": f"Bearer {journey.shell.env['TOKEN']}"},
        timeout=30,
    ).json()
    assert status["generation"] == 1 and status["revokedAt"] is None, status


def rotation_status(journey: Journey, command: ReadmeCommand) -> None:
    head = _tenants_head(journey)
    done = journey.run(command)
    assert done.returncode == 0, done.explain()
    # One line that says what the phase means for a client's key, and never contradicts itself.
    rolling = "the new keys are being deployed; the keys in use keep working meanwhile and until "
    both = "both generations' keys work until "
    # Without the Pulumi CLI the rotation's update fails: the keys in use stay, and it says so.
    stalled = "stalled: the update deploying the new keys failed: the keys in use keep working"
    assert re.search(
        rf"^phase ((rolling_out: {rolling}|grace: {both})\S+; re-read|{stalled})", done.stdout, re.M
    ), done.explain()
    assert "accepted: no" not in done.stdout, done.explain()
    assert _tenants_head(journey) == head, "--status changes nothing"


def _tenants_head(journey: Journey) -> str:
    found = journey.shell.run("git -C .tenancy/tenants-repo rev-parse HEAD", timeout=30)
    assert found.returncode == 0, found.explain()
    return found.stdout.strip()


# --- The portal -----------------------------------------------------------------------------------


def serve_portal(journey: Journey, command: ReadmeCommand) -> None:
    """The same service, opened in a browser: the page, its sign-in and its script load from it."""
    serve(journey, command)
    base = f"http://127.0.0.1:{journey.facts['port']}"
    page = httpx.get(f"{base}/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text
    assert "<title>Tenant portal</title>" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page.text)
    assert scripts, page.text
    for script in scripts:
        loaded = httpx.get(f"{base}{script}" if script.startswith("/") else f"{base}/{script}", timeout=30)
        assert loaded.status_code == 200, (script, loaded.status_code)


SECTIONS: dict[str, list[tuple[str, Step]]] = {
    "Quick start": [
        (r"^python3 -m venv \.venv && \.venv/bin/pip install -e '\.\[dev\]' && ", set_up),
        (r"^\.venv/bin/python -m pytest", run_by_ci),
        (r"^\. \.venv/bin/activate$", activate),
    ],
    "Running it on a real cluster": [(r"^pulumi ", pulumi_itself)],
    "Render, schema and policy": [
        (r"^tenantctl render --stack \S+ --out \S+", render_one_stack),
        (r"^tenantctl (render --all|policy) ", run_by_setup),
    ],
    "Automation and `tenantctl`": [
        (r"^tenantctl (up|preview|refresh|destroy|sync|outputs) ", needs_the_pulumi_cli),
        (r"^tenantctl stacks\b", list_stacks),
        (r"^tenantctl (backup|backups|restore) ", backups_need_a_bucket),
    ],
    "Self-service HTTP API": [
        (r"^tenantctl serve --project \. ", serve),
        (r"^export API=", export_api),
        (r"^export TOKEN=\$\(tenantctl dev-token ", export_token),
        (r"^tenantctl dev-token ", print_token),
        (r"^CREATED=\$\(curl -sX PUT ", create_tenant),
        (r"^curl -sN .*events", follow_events),
        (r"^curl -s \"\$API/api/v1/environments/dev/tenants/newco\"", read_back),
        (r"^REQUESTED=\$\(curl -sX PATCH ", request_change),
        (r"^REQUEST_ID=\$\(echo \"\$REQUESTED\" \| jq ", keep_request_id),
        (r"^export TENANCY_API_URL=\$API TENANCY_TOKEN=\$\(tenantctl dev-token ", export_cli_access),
        (r"^tenantctl requests list ", list_requests),
        (r"^tenantctl requests show ", show_request),
        (r"^tenantctl requests approve ", approve_request),
        (r"^tenantctl requests reject ", reject_decided_request),
        (r"^curl -sX POST \"\$API/api/v1/environments/dev/tenants/newco/qdrant/keys/rotate\"", rotate_keys),
        (r"^tenantctl rotate-keys newco --env dev --status$", rotation_status),
    ],
    "The portal (browser)": [(r"^tenantctl serve --project \.\s+# then open ", serve_portal)],
}


def section_of(command: ReadmeCommand) -> str | None:
    return next((name for name in SECTIONS if command.section.startswith(name)), None)


def step_for(command: ReadmeCommand) -> Step:
    """The one step that runs ``command``; fails, naming the command, when there is none."""
    name = section_of(command)
    assert name is not None, (
        f"{command}\nno journey runs the commands of this section: add it to tests/journeys/journeys.py"
    )
    steps = [step for pattern, step in SECTIONS[name] if re.search(pattern, command.text)]
    assert len(steps) == 1, (
        f"{command}\n{'no' if not steps else 'more than one'} step of tests/journeys/journeys.py runs "
        "this command: a README command must be run verbatim by exactly one"
    )
    return steps[0]


def run_section(journey: Journey, commands: list[ReadmeCommand]) -> None:
    for command in commands:
        step_for(command)(journey, command)
