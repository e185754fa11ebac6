"""Without the Pulumi CLI, an operation ends ``failed`` with an error saying exactly what is missing;
and the whole "Done when" path works from the command line: serve, dev-token, create, follow."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenancy.service.app import create_app
from tests.conftest import PROJECT_DIR
from tests.ports import free_port
from tests.service.conftest import Issuer, LiveServer, settings_for, spec, wait_for


@pytest.fixture
def path_without_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A PATH holding git and nothing else: no pulumi whatever the machine has installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = shutil.which("git")
    assert git is not None
    (bin_dir / "git").symlink_to(git)
    monkeypatch.setenv("PATH", str(bin_dir))
    return str(bin_dir)


def test_an_operation_fails_naming_the_missing_pulumi_cli(
    tmp_path: Path, issuer: Issuer, path_without_pulumi: str
) -> None:
    settings = settings_for(tmp_path / "state", issuer)
    app = create_app(settings)  # the real PulumiEngine
    with LiveServer(app) as server, server.client(issuer.admin_of("acme")) as client:
        operation = client.put("/api/v1/environments/dev/tenants/acme", json=spec("acme")).json()["operation"]
        finished = wait_for(client, operation["id"])
        tenant = client.get("/api/v1/environments/dev/tenants/acme").json()
    assert finished["status"] == "failed"
    assert finished["summary"]["code"] == "pulumi_cli_missing"
    assert "Pulumi CLI was not found on PATH" in finished["summary"]["error"]
    assert "3.272.0" in finished["summary"]["error"]  # the version it needs, and how to install it
    assert tenant["status"]["phase"] == "failed"


def _tenantctl(*args: str) -> list[str]:
    return [sys.executable, "-c", "from tenancy.cli import main; main()", *args]


@pytest.mark.skipif(
    shutil.which("pulumi") is not None, reason="checks the path a machine without Pulumi takes"
)
def _dev_token(
    tenant: str, *, env: dict[str, str], cwd: Path, check: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _tenantctl("dev-token", "--tenant", tenant),
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
        check=check,
    )


def test_tenantctl_serve_then_dev_token_then_create_and_follow(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    env = {**os.environ, "TENANCY_SERVICE_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
    env.pop("TENANCY_SERVICE_JWKS_URL", None)
    server = subprocess.Popen(
        _tenantctl("serve", "--port", str(port), "--project", str(PROJECT_DIR), "--log-level", "warning"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180  # a bound on a hung start, not a timing: loaded CI takes 30+ s
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "tenantctl serve did not start"
            time.sleep(0.1)
        # A second terminal in another directory, without the first one's TENANCY_SERVICE_STATE_DIR:
        # no key of its own (the service would refuse its tokens), but what to do instead.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        other_terminal = {k: v for k, v in env.items() if k != "TENANCY_SERVICE_STATE_DIR"}
        refused = _dev_token("acme", env=other_terminal, cwd=elsewhere)
        assert refused.returncode == 2 and not refused.stdout, refused
        assert (
            f"error: no local issuer in {elsewhere / '.tenancy'}: `tenantctl serve` makes it"
            in refused.stderr
        )
        assert "Run dev-token in the directory where tenantctl serve runs" in refused.stderr
        assert not (elsewhere / ".tenancy").exists()
        # A name no tenant can have (the portal's sign-in refuses it too): no token for it.
        misnamed = _dev_token("Bad_Name", env=env, cwd=tmp_path)
        assert misnamed.returncode == 2 and not misnamed.stdout, misnamed
        assert "--tenant 'Bad_Name' is not a tenant name" in misnamed.stderr
        token = _dev_token("acme", env=env, cwd=tmp_path, check=True).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            seeded = client.get("/api/v1/tenants").json()["tenants"]
            assert {(t["environment"], t["name"]) for t in seeded} >= {("dev", "acme")}
            created = client.put("/api/v1/environments/dev/tenants/acme", json=spec("acme")).json()
            events: list[tuple[str, Any]] = []
            with client.stream("GET", created["operation"]["links"]["events"]) as stream:
                name = ""
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        name = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        events.append((name, json.loads(line.removeprefix("data: "))))
            other = client.get("/api/v1/environments/dev/tenants/initech")
        end = events[-1]
        assert end[0] == "end" and end[1]["status"] == "failed"
        assert end[1]["summary"]["code"] == "pulumi_cli_missing"
        assert "Install Pulumi" in end[1]["summary"]["error"]
        assert other.status_code == 404  # and nothing of another tenant
    finally:
        server.terminate()
        output = server.communicate(timeout=15)[0]
    assert "Traceback" not in output, output
    # The state directory is not the default one here: the hint names it.
    assert f"get a token with: tenantctl dev-token --tenant <name> --state-dir {state}\n" in output, output


def test_a_second_serve_on_a_busy_port_stops_before_touching_anything(tmp_path: Path) -> None:
    # Another service (or anything) already listens where this one was told to: it must say so and
    # stop before its start-up, which would seed the state, queue the reconcile's updates and start
    # workers on them for a service that never listens.
    state = tmp_path / "state"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "TENANCY_SERVICE_STATE_DIR": str(state)}
        done = subprocess.run(
            _tenantctl("serve", "--port", str(port), "--project", str(PROJECT_DIR)),
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
    assert done.returncode == 1, done
    assert done.stderr.startswith(
        f"error: tenantctl serve could not start: 127.0.0.1:{port} is already in use (another tenantctl "
        "serve?); stop it, or choose another port with --port or TENANCY_SERVICE_PORT\n"
    ), done.stderr
    assert "Traceback" not in done.stderr and "queued" not in done.stderr
    assert not state.exists()  # no repository, queue or key made
