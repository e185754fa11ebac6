"""The real engine end to end: a tenant stack against a local file backend, the Kubernetes provider
rendering YAML to a directory (no cluster). Needs the Pulumi CLI (and its plugins); skipped without.

The platform stack a tenant stack reads is replaced by a small YAML-runtime stack exporting the same
``tenantContract`` (``platform:platformStack`` points the tenant stack at it), so the test does not
depend on what the platform program installs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tenancy.automation.contract import OperationKind, OperationStatus
from tenancy.automation.fingerprint import spec_fingerprint
from tenancy.automation.pulumi_engine import PulumiEngine
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.settings import AutomationSettings
from tenancy.automation.worker import Worker
from tenancy.render.runtime import platform_outputs_for
from tenancy.spec.platform import read_platform_config_file

from .conftest import PROJECT_DIR, stack, tenant_spec

pytestmark = [
    pytest.mark.pulumi_cli,
    pytest.mark.skipif(shutil.which("pulumi") is None, reason="needs the Pulumi CLI on PATH"),
    pytest.mark.timeout(900),
]

PASSPHRASE = "tenancy-tests"


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)
    state = tmp_path / "state" / "pulumi-state"
    state.mkdir(parents=True)
    return state.as_uri()


@pytest.fixture
def contract_stack(tmp_path: Path, backend: str) -> str:
    """A stand-in platform stack ``dev`` that exports the dev contract; returns its full name."""
    project = tmp_path / "contract"
    project.mkdir()
    outputs = platform_outputs_for(read_platform_config_file(PROJECT_DIR / "Pulumi.dev.yaml"))
    document = {"name": "platform-contract", "runtime": "yaml", "outputs": outputs}
    (project / "Pulumi.yaml").write_text(yaml.safe_dump(document))
    env = {**os.environ, "PULUMI_BACKEND_URL": backend, "PULUMI_SKIP_UPDATE_CHECK": "true"}
    for command in (["stack", "init", "dev"], ["up", "--yes", "--stack", "dev"]):
        subprocess.run(["pulumi", "--non-interactive", *command], cwd=project, env=env, check=True)
    return "organization/platform-contract/dev"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project (the program is the real one, through the project's virtualenv)."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml", "__main__.py"):
        shutil.copy(PROJECT_DIR / name, copy / name)
    (copy / ".venv").symlink_to(PROJECT_DIR / ".venv")
    (copy / "tenants" / "dev").mkdir(parents=True)
    return copy


def test_a_tenant_stack_goes_through_its_whole_life(
    tmp_path: Path, project: Path, backend: str, contract_stack: str
) -> None:
    rendered = tmp_path / "rendered"
    settings = AutomationSettings(
        project_dir=project,
        state_dir=tmp_path / "state",
        backend_url=backend,
        stack_config={
            "platform:platformStack": contract_stack,
            "kubernetes:renderYamlToDirectory": str(rendered),
            # No Keycloak to talk to here: the tenant's groups are left out of this stack.
            "platform:manageKeycloakGroups": "false",
        },
    )
    engine = PulumiEngine(settings)
    engine.check_cli()
    queue = SqliteOperationQueue(settings.queue_path)
    worker = Worker(queue, engine, max_parallel=2)
    tenant = stack("clitest")
    spec = tenant_spec("clitest", deletionProtection=False)

    up = queue.submit(tenant, OperationKind.up, spec=spec, requested_by="test")
    [done] = worker.run_until_idle()
    assert done.id == up.id and done.status is OperationStatus.succeeded, done.summary
    assert done.summary is not None and done.summary.changes.get("create", 0) > 0
    assert done.summary.outputs["namespace"] == "tenant-clitest"
    assert any(event.kind == "resource" and event.status == "done" for event in queue.events(up.id))
    manifests = "\n".join(path.read_text() for path in rendered.rglob("*.yaml"))
    assert "kind: Namespace" in manifests and "tenant-clitest" in manifests
    assert engine.applied_fingerprint(tenant) == spec_fingerprint(spec)
    assert tenant in engine.stacks("dev")
    assert engine.outputs(tenant)["deletionProtection"] is False

    # The API's pods (dev) read this state through a read-only mount of the workers' volume at another
    # path, with an engine of their own: it reveals what the workers wrote and writes nothing there.
    (tmp_path / "api-mount").symlink_to(tmp_path / "state")
    reader = PulumiEngine(
        AutomationSettings(
            project_dir=project,
            state_dir=tmp_path / "api-state",
            backend_url=(tmp_path / "api-mount" / "pulumi-state").as_uri(),
        )
    )
    written = {path: path.stat().st_mtime_ns for path in Path(settings.pulumi_state_dir).rglob("*")}
    assert reader.outputs(tenant, reveal_secrets=True) == engine.outputs(tenant, reveal_secrets=True)
    assert {path: path.stat().st_mtime_ns for path in Path(settings.pulumi_state_dir).rglob("*")} == written

    preview = queue.submit(
        tenant, OperationKind.preview, spec={**spec, "plan": "medium"}, requested_by="test"
    )
    [previewed] = worker.run_until_idle()
    assert previewed.id == preview.id and previewed.status is OperationStatus.succeeded, previewed.summary
    assert previewed.summary is not None and previewed.summary.changes.get("update", 0) > 0

    # An update killed half-way leaves a lock behind; the next operation recovers the stack first.
    locks = Path(settings.pulumi_state_dir) / ".pulumi" / "locks" / "organization" / "platform" / tenant.name
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "stale.json").write_text(
        '{"pid": 1, "username": "ci", "hostname": "gone", "timestamp": "2020-01-01T00:00:00Z"}'
    )
    assert engine.needs_recovery(tenant)
    refresh = queue.submit(tenant, OperationKind.refresh, spec=None, requested_by="test")
    [refreshed] = worker.run_until_idle()
    assert refreshed.id == refresh.id and refreshed.status is OperationStatus.succeeded, refreshed.summary
    assert refreshed.summary is not None and refreshed.summary.recovered
    assert not engine.needs_recovery(tenant)

    destroy = queue.submit(tenant, OperationKind.destroy, spec=None, requested_by="test")
    [destroyed] = worker.run_until_idle()
    assert destroyed.id == destroy.id and destroyed.status is OperationStatus.succeeded, destroyed.summary
    assert tenant not in engine.stacks("dev")
    assert not (project / f"Pulumi.{tenant.name}.yaml").exists()
