"""Journey: a tenant-admin reveals the Qdrant API key in dev, where tenant stacks' state is the Pulumi file
backend on the workers' volume (the dev stack file has no state bucket).

The service runs for real (HTTP, JWT from a JWKS, git) as the API's pods run it (no workers), with the real
``PulumiEngine`` in the environment the real dev platform program gives the API Deployment. The workers'
claim is a directory here, seen by each role at the path its Deployment mounts it at. No Pulumi CLI runs on
this machine: a stand-in ``pulumi`` answers ``stack output`` from the backend directory it is handed
(``PULUMI_BACKEND_URL``), the way the CLI reads a file backend; tests/automation/test_pulumi_cli.py does the
same read with the real CLI, through a second path, where one is installed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path, PurePosixPath

import pytest

from tenancy.builders.selfservice import API_NAME, WORKER_NAME
from tenancy.service.app import create_app
from tests.platform import test_secret_reveal as platform
from tests.service.conftest import Issuer, LiveServer, settings_for, spec

ACME = "/api/v1/environments/dev/tenants/acme"
REVEAL = f"{ACME}/qdrant/api-key/reveal"
STAND_IN_CLI = """\
import json, os, sys
from urllib.parse import urlparse

args = [arg for arg in sys.argv[1:] if arg != "--non-interactive"]
if args[:1] == ["version"]:
    print("v3.272.0")
    sys.exit(0)
if args[:2] != ["stack", "output"]:
    sys.exit(f"stand-in pulumi: not expected here: {args}")
stack = args[args.index("--stack") + 1]
state = os.path.join(urlparse(os.environ["PULUMI_BACKEND_URL"]).path, ".pulumi", "stacks", "platform")
try:
    with open(os.path.join(state, stack + ".json")) as file:
        checkpoint = json.load(file)
except FileNotFoundError:
    sys.exit(f"error: no stack named '{stack}' found")
shown = "--show-secrets" in args
outputs, secret = checkpoint["outputs"], checkpoint["secret"]
print(json.dumps({k: v if shown or k not in secret else "[secret]" for k, v in outputs.items()}))
"""


def _inside_claim(capture: platform.StackCapture, deployment: str, claim_dir: Path) -> Path:
    """Where a role's backend is on this machine: the claim's directory plus the path inside it."""
    location = platform.state_location(capture, deployment)
    assert location.kind == "claim", f"{deployment}: its state is not on the workers' volume ({location})"
    return claim_dir / PurePosixPath(location.path)


def test_a_tenant_admin_reveals_in_dev_the_key_the_workers_wrote(
    tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = platform._platform("dev").capture
    claim_dir = tmp_path / "selfservice-worker-state"
    claim_dir.mkdir()
    api_backend = _inside_claim(capture, API_NAME, claim_dir)
    worker_backend = _inside_claim(capture, WORKER_NAME, claim_dir)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cli = bin_dir / "pulumi"
    cli.write_text(f"#!{sys.executable}\n{STAND_IN_CLI}")
    cli.chmod(0o755)
    # The engine's part of the pod's environment (the service's own settings are this test's: a local
    # repository and queue, the test issuer).
    environment = {
        name: value
        for name, value in platform.pod_environment(capture, API_NAME).items()
        if not name.startswith("TENANCY_SERVICE_")
    }
    environment.update(
        TENANCY_BACKEND_URL=api_backend.as_uri(), TENANCY_PROJECT_DIR=str(platform.PROJECT_DIR)
    )
    engine = platform.engine_in(environment, monkeypatch)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    app = create_app(settings_for(tmp_path / "api-state", issuer, workers=0), engine=engine)
    with LiveServer(app) as server, server.client(issuer.admin_of("acme")) as client:
        assert client.put(ACME, json=spec("acme")).status_code in (200, 201, 202)

        # Queued, not yet run by a worker: nothing in the workers' state, and the API says so.
        before = client.post(REVEAL)
        assert before.status_code == 404 and before.json()["error"]["code"] == "output_not_available"
        assert list(claim_dir.iterdir()) == []  # the API created nothing there (read-only in the pod)

        # A worker's update writes the stack's state into its volume (here: what `stack output` reads).
        stacks = worker_backend / ".pulumi" / "stacks" / "platform"
        stacks.mkdir(parents=True)
        outputs = {"namespace": "tenant-acme", "qdrantApiKey": "key-acme", "qdrantReadOnlyApiKey": "ro-acme"}
        checkpoint = {"outputs": outputs, "secret": ["qdrantApiKey", "qdrantReadOnlyApiKey"]}
        (stacks / "dev.acme.json").write_text(json.dumps(checkpoint))

        revealed = client.post(REVEAL)
    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["apiKey"] == "key-acme" and revealed.json()["readOnlyApiKey"] == "ro-acme"
    assert revealed.headers["Cache-Control"] == "no-store"
