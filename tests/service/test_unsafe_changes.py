"""The API's update path compares with the spec in git and refuses what cannot be applied safely."""

from __future__ import annotations

from typing import Any

import yaml

from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant

ACME = "/api/v1/environments/dev/tenants/acme"


def test_a_qdrant_scale_down_is_refused_with_the_replicas_to_keep(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app(workers=0)
    live: LiveServer = serve(app)
    create_tenant(app, "acme", plan="medium", qdrant={"enabled": True, "replicas": 3})
    before = app.state.backends.repository.read_text("dev", "acme")
    with live.client(issuer.admin_of("acme")) as client:
        response = client.patch(ACME, json={"qdrant": {"replicas": 1}})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_spec"
        [detail] = error["details"]
        assert detail["field"] == "qdrant.replicas"
        assert "set qdrant.replicas: 3" in detail["reason"]
        assert app.state.backends.repository.read_text("dev", "acme") == before  # nothing committed
        response = client.patch(
            ACME, json={"qdrant": {"replicas": 3, "resources": {"cpu": "2", "memory": "4Gi"}}}
        )
        assert response.status_code == 202, response.text
    assert yaml.safe_load(app.state.backends.repository.read_text("dev", "acme"))["qdrant"]["replicas"] == 3
