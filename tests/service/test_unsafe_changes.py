"""The API's update path compares with the spec in git and refuses what cannot be applied safely."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant, wait_for

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


@pytest.mark.parametrize("after_a_change", [False, True], ids=["file-from-git", "file-this-service-wrote"])
def test_a_scale_down_that_also_changes_the_volumes_is_refused_naming_the_fields(
    make_app: AppFactory, serve: Any, issuer: Issuer, after_a_change: bool
) -> None:
    # after_a_change: the file checked against is the one the service's previous PATCH wrote, whose
    # resolution that write kept (not read back from git): refused just the same.
    app, _ = make_app(workers=0)
    live: LiveServer = serve(app)
    create_tenant(
        app, "acme", plan="medium", qdrant={"enabled": True, "replicas": 3, "storage": {"size": "10Gi"}}
    )
    if after_a_change:
        with live.client(issuer.admin_of("acme")) as client:
            assert client.patch(ACME, json={"displayName": "Acme 2"}).status_code == 202
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


@pytest.mark.parametrize(
    ("failure", "taken_back"),
    [
        ("never-ran", True),  # the update stopped before Pulumi ran: nothing of it is on the stack
        ("engine-error", False),  # it failed while Pulumi worked: part of it may be applied
        # The engine also gives this code to an update that failed while Pulumi worked.
        ("secrets-unavailable", False),
    ],
)
def test_a_version_that_reached_only_git_can_be_taken_back(
    make_app: AppFactory, serve: Any, issuer: Issuer, failure: str, taken_back: bool
) -> None:
    # The check is against what the stack holds (this queue's record: the last succeeded update and
    # any later one that may have applied part of it), not the file in git: a version bump whose
    # update never ran is not locked in.
    from tenancy.automation.contract import StackRef
    from tenancy.automation.errors import PulumiCliMissing, SecretsUnavailable

    app, engine = make_app()
    live: LiveServer = serve(app)
    with live.client(issuer.platform_admin()) as client:
        created = client.put(ACME, json={**_spec("acme"), "qdrant": {"enabled": True, "version": "v1.18.2"}})
        assert created.status_code == 202, created.text
        assert wait_for(client, created.json()["operation"]["id"])["status"] == "succeeded"
        errors: dict[str, Exception | str] = {
            "never-ran": PulumiCliMissing("the Pulumi CLI is not installed"),
            "engine-error": "update failed",
            "secrets-unavailable": SecretsUnavailable("cannot open the secrets provider (hashivault: 403)"),
        }
        engine.fail_next(StackRef("dev", "acme"), errors[failure])
        bumped = client.patch(ACME, json={"qdrant": {"version": "v1.19.0"}})
        assert bumped.status_code == 202, bumped.text
        assert wait_for(client, bumped.json()["operation"]["id"])["status"] == "failed"

        back = client.patch(ACME, json={"qdrant": {"version": "v1.18.2"}})

        if taken_back:
            assert back.status_code == 202, back.text
        else:
            assert back.status_code == 422, back.text
            [detail] = back.json()["error"]["details"]
            assert detail["field"] == "qdrant.version" and "keep v1.19.0" in detail["reason"]


def test_a_version_is_not_taken_back_over_an_update_interrupted_while_pulumi_worked(
    tmp_path: Any, make_app: AppFactory, issuer: Issuer
) -> None:
    # The upgrade's update was handed to Pulumi, then its process died and the restart queued it again
    # (the stack flagged interrupted): part of it may be applied, so the file in git stands (outside
    # review diff5: a downgrade was accepted and superseded the requeued upgrade).
    from tenancy.automation.contract import StackRef

    state = tmp_path / "state"
    first, _ = make_app(state_dir=state)
    with LiveServer(first) as server, server.client(issuer.admin_of("acme")) as client:
        created = client.put(ACME, json={**_spec("acme"), "qdrant": {"enabled": True, "version": "v1.18.2"}})
        assert wait_for(client, created.json()["operation"]["id"])["status"] == "succeeded"
    second, _ = make_app(state_dir=state, workers=0)
    queue = second.state.backends.queue
    with LiveServer(second) as server, server.client(issuer.admin_of("acme")) as client:
        bumped = client.patch(ACME, json={"qdrant": {"version": "v1.19.0"}})
        assert bumped.status_code == 202, bumped.text
        crashed = queue.claim_next(worker_id="a-process-that-died")
        assert crashed is not None and crashed.id == bumped.json()["operation"]["id"]
        queue.mark_engine_started(crashed.id)
        queue.requeue_interrupted()  # what the restarted service does with it
        assert queue.was_interrupted(StackRef("dev", "acme"))

        back = client.patch(ACME, json={"qdrant": {"version": "v1.18.2"}})

        assert back.status_code == 422, back.text


def _spec(name: str) -> dict[str, Any]:
    from tests.service.conftest import spec

    return {key: value for key, value in spec(name).items() if key != "name"}


def test_the_resolution_kept_for_a_written_file_is_what_reading_that_file_gives(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    # For every example tenant, after each of two changes, the resolution a write keeps for the file
    # it commits equals the one a service that reads the committed file from git computes.
    from pathlib import Path

    from tenancy.spec.tenant import parse_tenant, resolve

    app, _ = make_app(workers=0)
    live: LiveServer = serve(app)
    backends = app.state.backends
    examples = sorted(Path(__file__).resolve().parents[2].glob("tenants/*/*.yaml"))
    assert examples
    for index, example in enumerate(examples):
        document = yaml.safe_load(example.read_text())
        environment, name = example.parent.name, f"copy-{index}"
        document["name"] = name
        backends.repository.write(environment, name, document, author=_AUTHOR, message=f"Create {name}")
        path = f"/api/v1/environments/{environment}/tenants/{name}"
        for patch in ({"displayName": f"{name} again"}, {"labels": {"team": "search"}}):
            with live.client(issuer.platform_admin()) as client:
                response = client.patch(path, json=patch)
                assert response.status_code == 202, response.text
            committed = backends.repository.file(environment, name)
            file = backends.changes.display_file(_stack(environment, name))
            kept = backends.changes._resolved[(committed.blob, environment, file)]
            assert kept == resolve(parse_tenant(committed.document, file=file), environment), example


def _stack(environment: str, name: str) -> Any:
    from tenancy.automation.contract import StackRef

    return StackRef(environment, name)


def _author() -> Any:
    from tenancy.service.core.tenants_repo import GitAuthor

    return GitAuthor("Test", "test@example.com")


_AUTHOR = _author()
