"""The API's update path compares with the spec in git and refuses what cannot be applied safely."""

from __future__ import annotations

from typing import Any

import yaml

from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant

ACME = "/api/v1/environments/dev/tenants/acme"


def test_a_qdrant_scale_down_is_accepted_and_queued_for_the_worker_to_drain(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app(workers=0)
    live: LiveServer = serve(app)
    create_tenant(app, "acme", plan="medium", qdrant={"enabled": True, "replicas": 3})
    with live.client(issuer.admin_of("acme")) as client:
        response = client.patch(ACME, json={"qdrant": {"replicas": 1}})
        assert response.status_code == 202, response.text
    assert yaml.safe_load(app.state.backends.repository.read_text("dev", "acme"))["qdrant"]["replicas"] == 1


def test_a_scale_down_that_also_changes_the_volumes_is_refused_naming_the_fields(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app(workers=0)
    live: LiveServer = serve(app)
    create_tenant(
        app, "acme", plan="medium", qdrant={"enabled": True, "replicas": 3, "storage": {"size": "10Gi"}}
    )
    before = app.state.backends.repository.read_text("dev", "acme")
    with live.client(issuer.admin_of("acme")) as client:
        response = client.patch(ACME, json={"qdrant": {"replicas": 1, "storage": {"size": "20Gi"}}})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_spec"
        reasons = {detail["field"]: detail["reason"] for detail in error["details"]}
        assert "scale down first" in reasons["qdrant.replicas"]
        assert "set qdrant.storage.size: 10Gi" in reasons["qdrant.storage.size"]
        assert app.state.backends.repository.read_text("dev", "acme") == before  # nothing committed


def test_a_volume_growth_on_a_class_not_listed_as_expandable_is_refused_naming_the_field(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app(workers=0)
    live: LiveServer = serve(app)
    create_tenant(app, "acme", plan="medium", qdrant={"enabled": True, "storage": {"size": "10Gi"}})
    with live.client(issuer.admin_of("acme")) as client:
        response = client.patch(ACME, json={"qdrant": {"storage": {"size": "20Gi"}}})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_spec"
        [detail] = error["details"]
        assert detail["field"] == "qdrant.storage.size"
        assert "would grow from 10Gi to 20Gi" in detail["reason"]
        assert "platform:expandableStorageClasses" in detail["reason"]
