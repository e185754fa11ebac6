"""The dashboard's list (``/portal/api/overview``): a deleted tenant whose destroy failed is listed,
marked deleted, so its page (and its "Retry delete") is found without typing its address."""

from __future__ import annotations

from typing import Any

from tenancy.automation.contract import StackRef
from tests.service.conftest import AppFactory, Issuer, LiveServer, spec, wait_for

ACME = "/api/v1/environments/dev/tenants/acme"


def _listed(client: Any) -> dict[str, dict[str, Any]]:
    answer = client.get("/portal/api/overview")
    assert answer.status_code == 200, answer.text
    return {f"{t['environment']}.{t['name']}": t for t in answer.json()["tenants"]}


def test_the_dashboard_lists_a_deleted_tenant_whose_destroy_failed_until_a_retry_destroys_it(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, engine = make_app()
    server: LiveServer = serve(app)
    with server.client(issuer.admin_of("acme", "beta")) as admin:
        for name in ("acme", "beta"):
            created = admin.put(
                f"/api/v1/environments/dev/tenants/{name}", json=spec(name, displayName=name.upper())
            )
            wait_for(admin, created.json()["operation"]["id"])
        engine.fail_next(StackRef("dev", "acme"), "namespace tenant-acme is stuck on a finalizer")
        failed = wait_for(admin, admin.delete(ACME).json()["operation"]["id"])
        assert failed["status"] == "failed"

        listed = _listed(admin)
        assert "dev.acme" in listed, sorted(listed)
        acme = listed["dev.acme"]
        assert acme["deleted"] is True and acme["usage"] is None
        assert (acme["displayName"], acme["plan"], acme["role"]) == ("ACME", "small", "tenant-admin")
        assert acme["status"]["phase"] == "failed"
        assert "finalizer" in acme["status"]["message"] and "DELETE" in acme["status"]["message"]
        assert acme["lastOperation"]["id"] == failed["id"]
        # What the tenant's page (the read it links to) shows, the dashboard says too.
        assert admin.get(ACME).json()["status"] == acme["status"]
        assert listed["dev.beta"]["deleted"] is False and listed["dev.beta"]["usage"] is not None

        with server.client(issuer.admin_of("beta")) as other:
            assert "dev.acme" not in _listed(other)  # only to those who may read it

        wait_for(admin, admin.delete(ACME).json()["operation"]["id"])  # the retry destroys it
        assert "dev.acme" not in _listed(admin)
