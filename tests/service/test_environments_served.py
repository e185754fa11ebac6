"""A platform stack's service manages its own environment's tenants only.

The tenants repository holds every environment's files, and each platform stack (dev, prod) runs the
service in its own cluster: its workers deploy with that cluster's credentials and that environment's
state bucket. Tenant namespaces are ``tenant-<name>`` in either environment, so a dev tenant run by
prod's workers lands in the prod cluster, on the namespace (Secrets, policies) of the prod tenant of
that name. The service used to accept, reconcile and run every environment it found in git: prod's
service queued an update of each dev tenant at its first start.

These tests start the service with the settings the prod platform stack gives its pods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tenancy.automation.contract import OperationKind, OperationStatus, StackRef
from tenancy.builders.selfservice import API_NAME, WORKER_NAME
from tests.platform.support import dev_config, prod_config
from tests.platform.test_selfservice import capture, env_of, with_image
from tests.service.conftest import (
    Issuer,
    LiveServer,
    TenantEngine,
    create_tenant,
    settings_for,
    spec,
    wait_for,
)

SERVED = "TENANCY_SERVICE_ENVIRONMENTS"


def _platform_service(
    tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch, config: Any, role: str
) -> tuple[Any, TenantEngine]:
    """The service as the platform stack runs ``role`` (its environments from the pod's environment;
    the state, issuer and queue are this machine's stand-ins for the cluster's)."""
    from tenancy.service.app import create_app

    extra = {"stateBucket": "prod-tenant-state"} if config.object_storage is not None else {}
    captured = capture(with_image(config, workers=2, **extra))
    monkeypatch.setenv(SERVED, env_of(captured, role)[SERVED])
    engine = TenantEngine()
    settings = settings_for(tmp_path / "state", issuer, workers=2 if role == WORKER_NAME else 0)
    return create_app(settings, engine=engine), engine


@pytest.mark.parametrize("role", [API_NAME, WORKER_NAME])
def test_each_platforms_pods_serve_their_own_environment(
    role: str, tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for config in (dev_config(), prod_config()):
        app, _ = _platform_service(tmp_path / config.environment, issuer, monkeypatch, config, role)
        assert app.state.backends.settings.environments == (config.environment,)
        app.state.backends.close()


def test_the_prod_service_neither_writes_nor_starts_nor_runs_a_dev_tenant(
    tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, engine = _platform_service(tmp_path, issuer, monkeypatch, prod_config(), WORKER_NAME)
    # The shared tenants repository: acme in both environments (one team's name), initech in dev only.
    create_tenant(app, "acme", "prod")
    create_tenant(app, "acme", "dev", displayName="dev's acme")
    create_tenant(app, "initech", "dev")
    repository = app.state.backends.repository
    dev_acme = repository.read("dev", "acme")

    with LiveServer(app) as server, server.client(issuer.admin_of("acme", "initech")) as client:
        # The start queued the prod tenant's update (never applied) and nothing of dev.
        started = app.state.backends.queue.recent(limit=50)
        assert {op.stack for op in started} == {StackRef("prod", "acme")}
        assert wait_for(client, started[0].id)["status"] == "succeeded"

        dev_url = "/api/v1/environments/dev/tenants/acme"
        answers = {
            "read": client.get(dev_url),
            "write": client.put(dev_url, json=spec("acme", displayName="through prod's API")),
            "patch": client.patch(dev_url, json={"displayName": "through prod's API"}),
            "create": client.put("/api/v1/environments/dev/tenants/newco", json=spec("newco")),
            "delete": client.delete(dev_url),
            "reveal": client.post(f"{dev_url}/qdrant/api-key/reveal"),
            "list": client.get("/api/v1/tenants", params={"environment": "dev"}),
        }
        for what, answer in answers.items():
            assert answer.status_code == 404, (what, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "environment_not_served", what
            assert "prod" in error["message"] and "dev" in error["message"]
        listed = client.get("/api/v1/tenants").json()["tenants"]
        assert [(t["environment"], t["name"]) for t in listed] == [("prod", "acme")]
        assert client.get("/api/v1/environments/prod/tenants/acme").status_code == 200
        # The portal offers and shows only the environment it can write (its form's default included).
        assert client.get("/portal/api/schema").json()["environments"] == ["prod"]
        overview = client.get("/portal/api/overview").json()["tenants"]
        assert [(t["environment"], t["name"]) for t in overview] == [("prod", "acme")]

        # A tenant of dev only is no tenant here: no API key for it.
        key = client.post("/api/v1/tenants/initech/api-keys", json={"name": "ci", "role": "tenant-admin"})
        assert (key.status_code, key.json()["error"]["code"]) == (404, "tenant_not_found")
        assert client.post("/api/v1/tenants/acme/api-keys", json={"name": "ci"}).status_code == 201

        # Nothing of dev was written, and no dev operation came from the API.
        assert repository.read("dev", "acme") == dev_acme
        assert repository.read("dev", "newco") is None

        # A dev operation that reaches prod's queue anyway (a tenantctl pointed at it) fails unrun.
        stray = app.state.backends.queue.submit(
            StackRef("dev", "acme"), OperationKind.up, spec=dev_acme, requested_by="user:someone"
        )
        app.state.backends.wake_worker()
        admin = server.client(issuer.platform_admin())
        with admin:
            finished = wait_for(admin, stray.id)
    assert finished["status"] == OperationStatus.failed.value
    assert finished["summary"]["code"] == "environment_not_served"
    assert {call.stack for call in engine.calls} == {StackRef("prod", "acme")}


def test_a_service_on_a_checkout_serves_every_environment(tmp_path: Path, issuer: Issuer) -> None:
    """``tenantctl serve`` on a checkout (no platform settings) keeps serving dev and prod."""
    from tenancy.service.app import create_app

    app = create_app(settings_for(tmp_path / "state", issuer, workers=0), engine=TenantEngine())
    assert app.state.backends.settings.environments == ("dev", "prod")
    app.state.backends.close()
