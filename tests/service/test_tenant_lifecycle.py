"""Create, read, scale, preview, follow and delete a tenant through the API, with git as the record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tenancy.automation.contract import StackRef
from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant, spec, wait_for

ACME = "/api/v1/environments/dev/tenants/acme"


@pytest.fixture
def live(make_app: AppFactory, serve: Any) -> LiveServer:
    app, _ = make_app()
    server: LiveServer = serve(app)
    return server


@pytest.fixture
def admin(live: LiveServer, issuer: Issuer) -> Iterator[httpx.Client]:
    token = issuer.admin_of("acme", email="alice@acme.example", preferred_username="Alice Admin")
    with live.client(token) as client:
        yield client


def test_creating_a_tenant_commits_its_file_as_the_caller_and_queues_an_update(
    live: LiveServer, admin: httpx.Client
) -> None:
    response = admin.put(ACME, json=spec("acme"))
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["changed"] is True
    assert response.headers["Location"] == f"/api/v1/operations/{accepted['operation']['id']}"
    assert accepted["operation"]["kind"] == "up" and accepted["operation"]["status"] in ("queued", "running")

    repository = live.app.state.backends.repository
    newest = repository.history("dev", "acme")[0]
    assert (newest.sha, newest.author_name, newest.author_email) == (
        accepted["commit"],
        "Alice Admin",
        "alice@acme.example",
    )
    assert yaml.safe_load(repository.read_text("dev", "acme")) == spec("acme")

    finished = wait_for(admin, accepted["operation"]["id"])
    assert finished["status"] == "succeeded"
    assert [e["kind"] for e in finished["events"]][-1] == "summary"


def test_reading_a_tenant_shows_spec_status_last_operation_and_masked_outputs(admin: httpx.Client) -> None:
    operation = admin.put(ACME, json=spec("acme", displayName="ACME")).json()["operation"]["id"]
    wait_for(admin, operation)
    response = admin.get(ACME)
    tenant = response.json()
    assert tenant["spec"]["displayName"] == "ACME"
    assert tenant["status"] == {"phase": "ready", "message": None}
    assert tenant["lastOperation"]["id"] == operation
    assert tenant["outputs"]["qdrantApiKey"] == "[secret]"
    assert tenant["outputs"]["vclusterKubeconfig"] == "[secret]"
    assert tenant["outputs"]["namespace"] == "tenant-acme"
    assert response.headers["ETag"] == f'"{tenant["etag"]}"'
    assert response.headers["Cache-Control"] == "no-store"


def test_head_on_a_tenant_answers_the_reads_status_and_etag_without_its_body(
    admin: httpx.Client, live: LiveServer, issuer: Issuer
) -> None:
    wait_for(admin, admin.put(ACME, json=spec("acme")).json()["operation"]["id"])
    read, checked = admin.get(ACME), admin.head(ACME)
    assert checked.status_code == 200 and checked.content == b""
    assert checked.headers["ETag"] == read.headers["ETag"]
    for header in ("Content-Type", "Content-Length", "Cache-Control"):
        assert checked.headers[header] == read.headers[header]
    # Every header the GET has, as many times (a repeated one is not collapsed: review of HEAD).
    assert sorted(name for name, _ in checked.headers.multi_items()) == sorted(
        name for name, _ in read.headers.multi_items()
    )

    admin.patch(ACME, json={"displayName": "ACME"})  # a change shows as a new ETag
    changed = admin.head(ACME)
    assert changed.headers["ETag"] != checked.headers["ETag"]
    assert changed.headers["ETag"] == admin.get(ACME).headers["ETag"]

    with live.client() as anonymous, live.client(issuer.admin_of("other")) as other:
        assert anonymous.head(ACME).status_code == 401
        assert other.head(ACME).status_code == 404  # as for a GET: not even whether it exists
    assert admin.head("/api/v1/environments/dev/tenants/nobody").status_code == 404


def test_patch_scales_qdrant_after_validating_the_merged_spec(admin: httpx.Client, live: LiveServer) -> None:
    create_tenant(live.app, "acme", plan="medium")  # a platform-admin sets the plan
    response = admin.patch(ACME, json={"qdrant": {"replicas": 3}})
    assert response.status_code == 202, response.text
    document = yaml.safe_load(live.app.state.backends.repository.read_text("dev", "acme"))
    assert document["qdrant"] == {"enabled": True, "replicas": 3}
    assert document["plan"] == "medium"
    assert response.json()["operation"]["id"] != ""


def test_patch_beyond_the_plan_is_refused_naming_the_field(admin: httpx.Client, live: LiveServer) -> None:
    admin.put(ACME, json=spec("acme"))
    before = live.app.state.backends.repository.read_text("dev", "acme")
    # Beyond every plan (a size within one would be a change request for it: test_change_requests).
    response = admin.patch(ACME, json={"qdrant": {"storage": {"size": "100Ti"}}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_spec"
    assert error["details"][0]["field"] == "qdrant.storage.size"
    assert "small plan" in error["details"][0]["reason"]
    assert live.app.state.backends.repository.read_text("dev", "acme") == before


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        ({"plan": "small"}, "owners", "required field is missing"),
        ({**spec("acme"), "plan": "huge"}, "plan", "Input should be"),
        (
            {**spec("acme"), "qdrant": {"enabled": True, "replicas": 0}},
            "qdrant.replicas",
            "greater than or equal",
        ),
        ({**spec("acme"), "qdrnt": {}}, "qdrnt", "unknown key"),
        ({**spec("acme"), "owners": ["not-an-email"]}, "owners", "not an email address"),
        ({**spec("acme"), "name": "other"}, "name", "the tenant named in the path"),
        (
            {**spec("acme"), "vcluster": {"enabled": True, "kubernetesVersion": "1.1"}},
            "vcluster.kubernetesVersion",
            "not offered",
        ),
        ([1, 2], "(document)", "one YAML mapping"),
    ],
)
def test_an_invalid_spec_gets_422_with_field_and_reason(
    admin: httpx.Client, live: LiveServer, document: Any, field: str, reason: str
) -> None:
    response = admin.put(ACME, json=document)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_spec"
    assert any(d["field"] == field and reason in d["reason"] for d in error["details"]), error
    assert live.app.state.backends.repository.read_text("dev", "acme") is None
    assert live.app.state.backends.queue.recent(stack=StackRef("dev", "acme")) == []


def test_a_body_that_is_not_json_gets_422_not_500(admin: httpx.Client) -> None:
    response = admin.put(ACME, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_an_oversized_body_is_refused(admin: httpx.Client) -> None:
    response = admin.put(ACME, json={**spec("acme"), "displayName": "x" * 100_000})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_delete_is_refused_while_deletion_protection_is_on(admin: httpx.Client, live: LiveServer) -> None:
    admin.put(ACME, json=spec("acme", deletionProtection=True))
    response = admin.delete(ACME)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "deletion_protected"
    assert live.app.state.backends.repository.read_text("dev", "acme") is not None

    assert admin.patch(ACME, json={"deletionProtection": False}).status_code == 202
    engine = live.app.state.backends.engine
    engine.pause()  # the destroy waits until the PATCH below is answered
    deleted = admin.delete(ACME)
    assert deleted.status_code == 202
    assert deleted.json()["operation"]["kind"] == "destroy"
    assert live.app.state.backends.repository.read_text("dev", "acme") is None
    # A PATCH never creates: while the destroy runs, as after it, the tenant is not there to change
    # (it said 409 previous_incarnation_not_destroyed until the destroy ended: outside replica review).
    patched = admin.patch(ACME, json={"displayName": "still here?"})
    engine.resume()
    assert patched.status_code == 404 and patched.json()["error"]["code"] == "tenant_not_found"
    assert wait_for(admin, deleted.json()["operation"]["id"])["status"] == "succeeded"
    assert admin.get(ACME).status_code == 404


def test_an_idempotency_key_replays_the_first_answer(admin: httpx.Client, live: LiveServer) -> None:
    headers = {"Idempotency-Key": "create-acme-1"}
    first = admin.put(ACME, json=spec("acme"), headers=headers)
    again = admin.put(ACME, json=spec("acme"), headers=headers)
    assert again.status_code == first.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    # With the first answer's ETag and Location (outside replica review: a replay had neither, so a
    # client retrying after a timeout could not go on with If-Match).
    assert (
        again.headers["ETag"] == first.headers["ETag"]
        and again.headers["Location"] == first.headers["Location"]
    )
    assert len(live.app.state.backends.repository.history("dev", "acme")) == 1
    assert len(live.app.state.backends.queue.recent(stack=StackRef("dev", "acme"))) == 1

    reused = admin.put(ACME, json=spec("acme", displayName="other"), headers=headers)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


def test_an_idempotent_api_key_creation_never_shows_the_key_twice(admin: httpx.Client) -> None:
    admin.put(ACME, json=spec("acme"))
    headers = {"Idempotency-Key": "key-1"}
    first = admin.post("/api/v1/tenants/acme/api-keys", json={"name": "ci"}, headers=headers).json()
    again = admin.post("/api/v1/tenants/acme/api-keys", json={"name": "ci"}, headers=headers).json()
    assert first["key"].startswith("tnk_") and again["key"] is None
    assert again["id"] == first["id"]


def test_if_match_protects_against_lost_updates(admin: httpx.Client) -> None:
    admin.put(ACME, json=spec("acme"))
    etag = admin.get(ACME).json()["etag"]
    assert (
        admin.patch(ACME, json={"displayName": "one"}, headers={"If-Match": f'"{etag}"'}).status_code == 202
    )
    stale = admin.patch(ACME, json={"displayName": "two"}, headers={"If-Match": f'"{etag}"'})
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "precondition_failed"


def test_an_unchanged_spec_makes_no_commit_but_still_reconciles(
    admin: httpx.Client, live: LiveServer
) -> None:
    admin.put(ACME, json=spec("acme"))
    again = admin.put(ACME, json=spec("acme")).json()
    assert again["changed"] is False and again["commit"] is None
    assert len(live.app.state.backends.repository.history("dev", "acme")) == 1


def test_preview_shows_the_rendered_diff_without_committing(admin: httpx.Client, live: LiveServer) -> None:
    create_tenant(live.app, "acme", plan="medium")  # a platform-admin sets the plan
    commits = len(live.app.state.backends.repository.history("dev", "acme"))
    response = admin.post(
        f"{ACME}/preview",
        json=spec(
            "acme", plan="medium", qdrant={"enabled": True, "resources": {"cpu": "2", "memory": "4Gi"}}
        ),
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    updated = [c for c in preview["changes"] if c["action"] == "update"]
    assert [c["name"] for c in updated] == ["acme-qdrant-release"]
    assert "values.resources.limits.cpu" in updated[0]["changedFields"]
    assert preview["summary"]["update"] == 1
    assert preview["pulumiPreview"] is None and "Pulumi CLI" in preview["pulumiPreviewNote"]
    secrets = [r for r in preview["desired"] if r["type"] == "kubernetes:core/v1:Secret"]
    assert secrets and all(r["inputs"].get("stringData") in (None, "[secret]") for r in secrets)
    assert len(live.app.state.backends.repository.history("dev", "acme")) == commits


def test_preview_of_a_new_tenant_creates_everything(admin: httpx.Client) -> None:
    preview = admin.post(f"{ACME}/preview", json=spec("acme")).json()
    assert set(preview["summary"]) == {"create"}
    assert any(r["type"] == "kubernetes:core/v1:Namespace" for r in preview["desired"])


def test_preview_queues_a_pulumi_preview_where_the_cli_is_present(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, engine = make_app(pulumi_preview=True)
    server = serve(app)
    with server.client(issuer.admin_of("acme")) as client:
        client.put(ACME, json=spec("acme"))
        preview = client.post(f"{ACME}/preview", json=spec("acme", displayName="Next")).json()
        assert preview["pulumiPreview"]["kind"] == "preview"
        finished = wait_for(client, preview["pulumiPreview"]["id"])
    assert finished["status"] == "succeeded"
    preview_calls = [c for c in engine.calls_for(StackRef("dev", "acme")) if c.kind.value == "preview"]
    assert preview_calls[0].spec is not None and preview_calls[0].spec["displayName"] == "Next"


def test_an_operation_can_be_followed_as_server_sent_events(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    from tests.service.conftest import TenantEngine

    app, _ = make_app(engine=TenantEngine(delay=0.3, resources=4))
    server = serve(app)
    with server.client(issuer.admin_of("acme")) as client:
        operation = client.put(ACME, json=spec("acme")).json()["operation"]["id"]
        events: list[tuple[str, dict[str, Any]]] = []
        with client.stream("GET", f"/api/v1/operations/{operation}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            name = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((name, json.loads(line.removeprefix("data: "))))
    names = [name for name, _ in events]
    assert names[0] == "operation" and names[-1] == "end"
    progress = [data for name, data in events if name == "progress"]
    assert [p["seq"] for p in progress] == list(range(1, len(progress) + 1))
    assert {p["resource"] for p in progress if p["kind"] == "resource"} == {
        f"kubernetes:core/v1:ConfigMap acme-{i}" for i in range(4)
    }
    assert events[-1][1]["status"] == "succeeded"


def test_following_resumes_after_last_event_id(admin: httpx.Client) -> None:
    operation = admin.put(ACME, json=spec("acme")).json()["operation"]["id"]
    total = len(wait_for(admin, operation)["events"])
    response = admin.get(f"/api/v1/operations/{operation}/events", headers={"Last-Event-ID": "2"})
    ids = [int(line.removeprefix("id: ")) for line in response.text.splitlines() if line.startswith("id: ")]
    assert ids == list(range(3, total + 1))


def test_a_tenants_operations_are_listed_newest_first(admin: httpx.Client) -> None:
    first = admin.put(ACME, json=spec("acme")).json()["operation"]["id"]
    wait_for(admin, first)
    second = admin.patch(ACME, json={"displayName": "B"}).json()["operation"]["id"]
    listed = admin.get(f"{ACME}/operations").json()["operations"]
    assert [op["id"] for op in listed] == [second, first]


def test_a_failed_operation_shows_as_the_tenants_status(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, engine = make_app()
    engine.fail_next(
        StackRef("dev", "acme"), "qdrant-release: timed out waiting for the pods to become ready"
    )
    server = serve(app)
    with server.client(issuer.admin_of("acme")) as client:
        operation = client.put(ACME, json=spec("acme")).json()["operation"]["id"]
        finished = wait_for(client, operation)
        tenant = client.get(ACME).json()
    assert finished["status"] == "failed"
    assert finished["summary"]["code"] == "engine_error"
    assert tenant["status"]["phase"] == "failed"
    assert "timed out" in tenant["status"]["message"]


def test_unknown_routes_and_methods_answer_json_errors(live: LiveServer, issuer: Issuer) -> None:
    with live.client(issuer.admin_of("acme")) as client:
        missing = client.get("/api/v1/nothing-here")
        wrong = client.post("/api/v1/tenants")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_a_queue_failure_after_the_commit_says_how_to_recover(
    admin: httpx.Client, live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("redis://:s3cret@redis:6379 refused")

    monkeypatch.setattr(live.app.state.backends.queue, "submit", unavailable)
    monkeypatch.setattr(live.app.state.backends.queue, "submit_in_order", unavailable)
    response = admin.put(ACME, json=spec("acme"))
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "engine_unavailable" and "repeat the request" in error["message"]
    assert "s3cret" not in response.text
    monkeypatch.undo()
    again = admin.put(ACME, json=spec("acme")).json()
    assert again["changed"] is False and again["operation"]["kind"] == "up"


def test_if_none_match_star_creates_but_never_overwrites(admin: httpx.Client, live: LiveServer) -> None:
    create_only = {"If-None-Match": "*"}
    created = admin.put(ACME, json=spec("acme", displayName="first"), headers=create_only)
    assert created.status_code == 202
    again = admin.put(ACME, json=spec("acme", displayName="second"), headers=create_only)
    assert again.status_code == 412
    assert again.json()["error"]["code"] == "precondition_failed"
    assert (
        yaml.safe_load(live.app.state.backends.repository.read_text("dev", "acme"))["displayName"] == "first"
    )
    assert admin.put(ACME, json=spec("acme"), headers={"If-None-Match": '"abc"'}).status_code == 422


def test_writes_through_the_api_keep_the_pins_the_file_holds(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    """Found following the README: every write through the API dropped fields equal to today's default
    (a Qdrant version or vCluster Kubernetes version pinned to it, readOnlyKey, snapshots), so the next
    default would have upgraded the tenant unasked. A PATCH, an approved change request and a key
    rotation keep them; the operations still carry the normal form, so a restart queues nothing."""
    from tenancy import versions
    from tenancy.service.core.reconcile import queue_unapplied_changes

    app, _ = make_app()
    live: LiveServer = serve(app)
    pins = {
        "qdrant": {"enabled": True, "version": versions.QDRANT_DEFAULT_VERSION, "readOnlyKey": True},
        "vcluster": {"enabled": True, "kubernetesVersion": versions.VCLUSTER_DEFAULT_KUBERNETES_VERSION},
    }
    create_tenant(app, "acme", plan="medium", **pins)
    repository = app.state.backends.repository

    def on_file() -> dict[str, Any]:
        found: dict[str, Any] = yaml.safe_load(repository.read_text("dev", "acme"))
        return found

    admin = live.client(issuer.admin_of("acme"))
    patched = admin.patch(ACME, json={"displayName": "ACME Corp."})
    assert patched.status_code == 202, patched.text
    assert wait_for(admin, patched.json()["operation"]["id"])["status"] == "succeeded"
    assert on_file()["qdrant"] == pins["qdrant"] and on_file()["vcluster"] == pins["vcluster"]
    assert on_file()["displayName"] == "ACME Corp."

    filed = admin.patch(ACME, json={"groups": {"viewers": ["/x"]}}).json()["changeRequest"]
    root = live.client(issuer.platform_admin(sub="root"))
    approved = root.post(f"/api/v1/change-requests/{filed['id']}/approve")
    assert approved.status_code == 202, approved.text
    assert wait_for(root, approved.json()["accepted"]["operation"]["id"])["status"] == "succeeded"
    assert on_file()["vcluster"] == pins["vcluster"] and on_file()["groups"] == {"viewers": ["/x"]}

    rotated = admin.post(f"{ACME}/qdrant/keys/rotate", json={"grace": "1h"})
    assert rotated.status_code == 202, rotated.text
    assert wait_for(admin, rotated.json()["operation"]["id"])["status"] == "succeeded"
    qdrant = on_file()["qdrant"]
    assert {key: qdrant[key] for key in pins["qdrant"]} == pins["qdrant"] and "keyRotation" in qdrant

    # What the stack last got is what the file says: a restart's reconcile queues nothing.
    assert queue_unapplied_changes(repository, app.state.backends.queue) == []
