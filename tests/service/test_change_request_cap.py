"""A tenant's cap on pending change requests does not count requests it cannot see and that can no
longer be applied: requests to create its name, filed before someone else created it (they end as
expired when next read) (outside review diff6)."""

from __future__ import annotations

from typing import Any

from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant

NEWCO = "/api/v1/environments/dev/tenants/newco"


def test_create_requests_of_a_name_since_created_do_not_fill_the_new_tenants_cap(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app(change_request_max_pending=2)
    live: LiveServer = serve(app)
    with live.client(issuer.admin_of("newco", sub="early-bird")) as early:
        for plan in ("medium", "large"):
            document = {"owners": ["me@newco.example"], "plan": plan, "qdrant": {"enabled": True}}
            filed = early.put(NEWCO, json=document)
            assert filed.status_code == 202 and filed.json().get("changeRequest"), filed.text
    create_tenant(app, "newco")  # created by a merged pull request (or a platform-admin)
    with live.client(issuer.admin_of("newco", sub="owner")) as owner:
        mine = owner.get("/api/v1/change-requests?status=pending").json()["changeRequests"]
        assert mine == []  # nothing pending that this admin can see
        filed = owner.patch(NEWCO, json={"groups": {"viewers": ["/auditors"]}})
        assert filed.status_code == 202, filed.text
