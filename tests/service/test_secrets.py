"""Secrets reach a caller only through the reveal routes, for a tenant-admin, and never the logs or the
audit log; every reveal is audited."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tenancy.automation.contract import StackRef
from tests.service.conftest import (
    AppFactory,
    Issuer,
    LiveServer,
    kubeconfig_of,
    secret_key_of,
    spec,
    wait_for,
)

ACME = "/api/v1/environments/dev/tenants/acme"
STACK = StackRef("dev", "acme")
SECRETS = [secret_key_of(STACK), "KUBE-SECRET-acme-e41d"]


@pytest.fixture
def live(make_app: AppFactory, serve: Any, issuer: Issuer) -> LiveServer:
    app, _ = make_app()
    server: LiveServer = serve(app)
    with server.client(issuer.admin_of("acme")) as client:
        operation = client.put(ACME, json=spec("acme", vcluster={"enabled": True})).json()["operation"]["id"]
        wait_for(client, operation)
    return server


def audit_lines(server: LiveServer) -> list[dict[str, Any]]:
    path = Path(server.app.state.backends.settings.audit_target)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_secrets_appear_nowhere_unless_revealed(
    live: LiveServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen = []
    with live.client(issuer.admin_of("acme")) as client:
        operation = client.patch(ACME, json={"displayName": "ACME"}).json()["operation"]["id"]
        wait_for(client, operation)
        for path in [
            ACME,
            f"{ACME}/operations",
            f"/api/v1/operations/{operation}",
            f"/api/v1/operations/{operation}/events",
            "/api/v1/tenants",
            "/api/v1/me",
            "/metrics",
        ]:
            seen.append(client.get(path).text)
        seen.append(client.post(f"{ACME}/preview", json=spec("acme", vcluster={"enabled": True})).text)
    everything = "\n".join(
        [*seen, caplog.text, Path(live.app.state.backends.settings.audit_target).read_text()]
    )
    for secret in SECRETS:
        assert secret not in everything


def test_a_tenant_admin_can_reveal_the_qdrant_key_and_it_is_audited_without_the_value(
    live: LiveServer, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with live.client(issuer.admin_of("acme")) as client:
        response = client.post(f"{ACME}/qdrant/api-key/reveal")
    assert response.status_code == 200
    assert response.json()["apiKey"] == secret_key_of(STACK)
    assert response.headers["Cache-Control"] == "no-store"
    entry = audit_lines(live)[-1]
    assert entry["action"] == "secret.reveal.qdrant-api-key" and entry["outcome"] == "succeeded"
    assert entry["tenant"] == "acme" and entry["actor"].startswith("user:")
    audit_text = Path(live.app.state.backends.settings.audit_target).read_text()
    for secret in SECRETS:
        assert secret not in audit_text and secret not in caplog.text


def test_a_tenant_admin_can_download_the_vcluster_kubeconfig(live: LiveServer, issuer: Issuer) -> None:
    with live.client(issuer.admin_of("acme")) as client:
        response = client.get(f"{ACME}/vcluster/kubeconfig")
    assert response.status_code == 200
    assert response.text == kubeconfig_of(STACK)
    assert response.headers["content-type"].startswith("application/yaml")
    assert "attachment" in response.headers["Content-Disposition"]
    assert audit_lines(live)[-1]["action"] == "secret.reveal.vcluster-kubeconfig"


def test_a_viewer_cannot_reveal_and_the_attempt_is_audited(live: LiveServer, issuer: Issuer) -> None:
    with live.client(issuer.viewer_of("acme")) as client:
        key = client.post(f"{ACME}/qdrant/api-key/reveal")
        kubeconfig = client.get(f"{ACME}/vcluster/kubeconfig")
    assert key.status_code == kubeconfig.status_code == 403
    for secret in SECRETS:
        assert secret not in key.text + kubeconfig.text
    denied = [e for e in audit_lines(live) if e["outcome"] == "denied"]
    assert {e["action"] for e in denied} == {"reveal_qdrant_api_key", "download_vcluster_kubeconfig"}


def test_revealing_before_the_first_deployment_says_so(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app(workers=0)
    server = serve(app)
    with server.client(issuer.admin_of("acme")) as client:
        client.put(ACME, json=spec("acme"))
        response = client.post(f"{ACME}/qdrant/api-key/reveal")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "output_not_available"
    assert "not been deployed" in response.json()["error"]["message"]


def test_every_change_is_in_the_audit_log(live: LiveServer, issuer: Issuer) -> None:
    with live.client(issuer.admin_of("acme")) as client:
        client.patch(ACME, json={"qdrant": {"storage": {"size": "100Ti"}}})  # refused: beyond every plan
        client.patch(ACME, json={"displayName": "Acme"})
        key = client.post("/api/v1/tenants/acme/api-keys", json={"name": "ci"}).json()
        client.delete(f"/api/v1/tenants/acme/api-keys/{key['id']}")
    entries = audit_lines(live)
    assert set(entries[0]) >= {"time", "actor", "tenant", "action", "outcome"}
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("tenant.replace", "accepted"),
        ("tenant.patch", "invalid"),
        ("tenant.patch", "accepted"),
        ("api-key.create", "succeeded"),
        ("api-key.revoke", "succeeded"),
    ]
    assert key["key"] not in Path(live.app.state.backends.settings.audit_target).read_text()


def test_an_unexpected_error_answers_500_without_its_text(
    live: LiveServer, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(live.app.state.backends.queue, "recent", explode)
    with live.client(issuer.admin_of("acme")) as client:
        response = client.get(f"{ACME}/operations")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert response.headers["x-request-id"] in response.json()["error"]["message"]
