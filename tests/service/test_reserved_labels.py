"""A tenant-admin's labels go on every object of the tenant, pod templates included, after the charts'
own labels. ``labels: {app: search}`` (a common choice for cost reports) used to be accepted and
committed, and then the update failed in Helm: the qdrant chart selects its pods by ``app``, the
tenant's value won in the pod template, and the StatefulSet's selector no longer matched its pods."""

from __future__ import annotations

from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant


def test_a_label_the_charts_select_by_is_refused_before_anything_is_committed(
    make_app: AppFactory, issuer: Issuer
) -> None:
    app, _ = make_app()
    create_tenant(app, "acme")
    repository = app.state.backends.repository
    before = repository.read("dev", "acme")
    url = "/api/v1/environments/dev/tenants/acme"
    with LiveServer(app) as server, server.client(issuer.admin_of("acme")) as client:
        refused = client.patch(url, json={"labels": {"app": "search"}})
        accepted = client.patch(url, json={"labels": {"team": "search"}})
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "invalid_spec"
    [detail] = error["details"]
    assert detail["field"] == "labels" and "'app' is reserved" in detail["reason"]
    assert accepted.status_code == 202
    assert (repository.read("dev", "acme") or {})["labels"] == {"team": "search"}
    assert before is not None and "labels" not in before
