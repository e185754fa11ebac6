"""Key rotation: what Qdrant accepts and what clients are handed in each phase, through the real tenant
program under mocks. The program reads the file only: the old keys go when the file records their
revocation (``revokedAt``), whatever the clock says."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tenancy.builders.qdrant import key_plan, qdrant_key_config, read_only_token
from tenancy.render.runtime import StackCapture
from tenancy.spec.tenant import parse_tenant, resolve

Run = Callable[..., StackCapture]
PASSWORD = "random:index/randomPassword:RandomPassword"
GRACE_UNTIL = "2000-01-01T00:00:00Z"  # long past: only a recorded revocation ends the grace period


def rotated(project: Path, generation: int | None, revoked: bool = False) -> None:
    path = project / "tenants" / "prod" / "acme.yaml"
    document = yaml.safe_load(path.read_text())
    if generation is not None:
        document["qdrant"]["keyRotation"] = {
            "generation": generation,
            "startedAt": "1999-12-31T23:00:00Z",
            "graceUntil": GRACE_UNTIL,
            "requestedBy": "alice@acme.example",
        }
        if revoked:
            document["qdrant"]["keyRotation"]["revokedAt"] = "2000-01-01T00:01:00Z"
    path.write_text(yaml.safe_dump(document))


def run(run_stack: Run, project: Path, generation: int | None, revoked: bool = False) -> StackCapture:
    rotated(project, generation, revoked)
    return run_stack("prod.acme", project)


def passwords(capture: StackCapture) -> dict[str, Any]:
    return {p.name: p.inputs.get("keepers") for p in capture.of_type(PASSWORD) if "qdrant" in p.name}


def secrets(capture: StackCapture) -> dict[str, dict[str, str]]:
    return {
        r.inputs["metadata"]["name"]: r.inputs["stringData"]
        for r in capture.kubernetes_objects()
        if r.kind == "Secret" and r.inputs["metadata"]["name"].startswith("qdrant")
    }


def server_config(capture: StackCapture) -> dict[str, Any]:
    return dict(yaml.safe_load(secrets(capture)["qdrant-server-keys"]["local.yaml"])["service"])


def checksum(capture: StackCapture) -> str:
    values = capture.named("acme-qdrant-release").inputs["values"]
    return str(values["podAnnotations"]["tenancy.platform/api-keys-checksum"])


def verify(token: str, key: str) -> dict[str, Any]:
    """An HS256 check written apart from the builder: header, claims, signature."""
    header, claims, signature = token.split(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    expected = hmac.new(key.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(decode(signature), expected), "signature does not match the key"
    assert json.loads(decode(header)) == {"alg": "HS256", "typ": "JWT"}
    result: dict[str, Any] = json.loads(decode(claims))
    return result


def test_before_any_rotation_the_keys_are_what_they_always_were(
    run_stack: Run, scratch_project: Path
) -> None:
    capture = run(run_stack, scratch_project, None)
    assert passwords(capture) == {"acme-qdrant-api-key": None, "acme-qdrant-read-only-api-key": None}
    client = secrets(capture)["qdrant-api-keys"]
    assert server_config(capture) == {
        "api_key": client["api-key"],
        "read_only_api_key": client["read-only-api-key"],
    }


def test_grace_period_accepts_both_generations_and_hands_clients_the_new_one(
    run_stack: Run, scratch_project: Path
) -> None:
    before = run(run_stack, scratch_project, None)
    old = secrets(before)["qdrant-api-keys"]
    capture = run(run_stack, scratch_project, 1)
    # Generation 0's passwords stay untouched (no keepers added); generation 1's is a new password.
    assert passwords(capture) == {
        "acme-qdrant-api-key": None,
        "acme-qdrant-read-only-api-key": None,
        "acme-qdrant-api-key-b": {"generation": "1"},
    }
    client = secrets(capture)["qdrant-api-keys"]
    assert client["api-key"] != old["api-key"]
    assert server_config(capture) == {
        "api_key": client["api-key"],
        "alt_api_key": old["api-key"],  # the old key still works on every pod
        "read_only_api_key": old["read-only-api-key"],  # and so does the old read-only key
        "jwt_rbac": True,
    }
    # The new read-only key is a read-only token signed with the new API key.
    assert verify(client["read-only-api-key"], client["api-key"]) == {"access": "r"}
    assert checksum(capture) != checksum(before)  # the pods roll onto the new config


def test_after_the_grace_period_the_previous_generation_is_revoked(
    run_stack: Run, scratch_project: Path
) -> None:
    grace = run(run_stack, scratch_project, 1)
    capture = run(run_stack, scratch_project, 1, revoked=True)
    assert passwords(capture) == {"acme-qdrant-api-key-b": {"generation": "1"}}
    client = secrets(capture)["qdrant-api-keys"]
    assert client == secrets(grace)["qdrant-api-keys"]  # clients were handed these at phase 1
    assert server_config(capture) == {"api_key": client["api-key"], "jwt_rbac": True}
    assert checksum(capture) != checksum(grace)


def test_the_next_rotation_reuses_the_other_slot_with_new_keepers(
    run_stack: Run, scratch_project: Path
) -> None:
    one = run(run_stack, scratch_project, 1, revoked=True)
    capture = run(run_stack, scratch_project, 2)
    assert passwords(capture) == {
        "acme-qdrant-api-key": {"generation": "2"},  # replaced: a new key
        "acme-qdrant-api-key-b": {"generation": "1"},  # kept: still accepted until the grace ends
    }
    config = server_config(capture)
    assert config["alt_api_key"] == secrets(one)["qdrant-api-keys"]["api-key"]
    assert "read_only_api_key" not in config  # both read-only tokens verify against api_key/alt_api_key
    new = secrets(capture)["qdrant-api-keys"]
    assert verify(new["read-only-api-key"], config["api_key"]) == {"access": "r"}
    old = secrets(one)["qdrant-api-keys"]
    assert verify(old["read-only-api-key"], config["alt_api_key"]) == {"access": "r"}


def test_rerunning_a_generation_declares_exactly_the_same_keys(run_stack: Run, scratch_project: Path) -> None:
    first = run(run_stack, scratch_project, 2)
    again = run(run_stack, scratch_project, 2)
    assert passwords(first) == passwords(again)
    assert secrets(first) == secrets(again) and checksum(first) == checksum(again)


def settings_of(rotation: dict[str, Any]) -> Any:
    spec = parse_tenant(
        {
            "name": "acme",
            "owners": ["a@acme.example"],
            "plan": "small",
            "qdrant": {"enabled": True, "keyRotation": rotation},
        },
        file="acme.yaml",
    )
    settings = resolve(spec, "prod").qdrant
    assert settings is not None
    return settings


def test_the_key_plan_ends_the_grace_only_when_the_file_records_the_revocation() -> None:
    record = {
        "generation": 3,
        "startedAt": "2026-01-01T00:00:00Z",
        "graceUntil": "2000-01-01T01:00:00Z",  # over long ago: the clock plays no part
        "requestedBy": "alice@acme.example",
    }
    during = key_plan(settings_of(record))
    after = key_plan(settings_of({**record, "revokedAt": "2026-01-01T01:00:30Z"}))
    assert during.previous is not None and during.previous.generation == 2
    assert after.previous is None and after.current.keepers == {"generation": "3"}
    assert not during.legacy_read_only and during.jwt_rbac


def test_the_program_never_reads_the_clock() -> None:
    import ast

    root = Path(__file__).resolve().parents[2]
    for module in ("components/tenant/qdrant.py", "tenancy/builders/qdrant.py"):
        tree = ast.parse((root / module).read_text())
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert not names & {"now", "utcnow", "time", "today"}, module


def test_read_only_tokens_are_deterministic_and_tied_to_their_key() -> None:
    assert read_only_token("k" * 48) == read_only_token("k" * 48)
    assert read_only_token("k" * 48) != read_only_token("j" * 48)
    assert "alt_api_key" not in qdrant_key_config("a", None)


def test_an_update_may_not_drop_or_skip_a_key_generation() -> None:
    from tenancy.spec.changes import refused_change_issues

    def tenant(generation: int | None) -> Any:
        qdrant: dict[str, Any] = {"enabled": True}
        if generation is not None:
            qdrant["keyRotation"] = {
                "generation": generation,
                "startedAt": "2026-01-01T00:00:00Z",
                "graceUntil": "2026-01-01T01:00:00Z",
                "requestedBy": "alice@acme.example",
            }
        document = {"name": "acme", "owners": ["a@acme.example"], "plan": "small", "qdrant": qdrant}
        return resolve(parse_tenant(document, file="acme.yaml"), "prod")

    assert refused_change_issues(tenant(2), tenant(2), file="acme.yaml") == []
    assert refused_change_issues(tenant(2), tenant(3), file="acme.yaml") == []
    [dropped] = refused_change_issues(tenant(2), tenant(None), file="acme.yaml")
    assert dropped.field == "qdrant.keyRotation" and "generation 2 to 0" in dropped.reason
    [skipped] = refused_change_issues(tenant(None), tenant(2), file="acme.yaml")
    assert "generation 0 to 2" in skipped.reason


def test_an_update_may_not_accept_revoked_keys_again() -> None:
    from tenancy.spec.changes import refused_change_issues

    record = {
        "generation": 2,
        "startedAt": "2026-01-01T00:00:00Z",
        "graceUntil": "2026-01-01T01:00:00Z",
        "requestedBy": "alice@acme.example",
    }
    revoked, in_grace = (
        resolve(settings_doc, "prod")
        for settings_doc in (
            parse_tenant(_document({**record, "revokedAt": "2026-01-01T01:00:10Z"}), file="acme.yaml"),
            parse_tenant(_document(record), file="acme.yaml"),
        )
    )
    [issue] = refused_change_issues(revoked, in_grace, file="acme.yaml")
    assert issue.field == "qdrant.keyRotation.revokedAt"
    assert refused_change_issues(in_grace, revoked, file="acme.yaml") == []  # revoking is a change


def _document(rotation: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "acme",
        "owners": ["a@acme.example"],
        "plan": "small",
        "qdrant": {"enabled": True, "keyRotation": rotation},
    }


def vault_keys(capture: StackCapture) -> dict[str, str]:
    [secret] = capture.of_type("vault:kv/secretV2:SecretV2")
    return dict(json.loads(secret.inputs["dataJson"]))


def test_prod_delivers_each_generation_s_keys_through_vault(run_stack: Run, scratch_project: Path) -> None:
    before = run(run_stack, scratch_project, None)
    assert vault_keys(before) == secrets(before)["qdrant-api-keys"]
    during = run(run_stack, scratch_project, 1)
    delivered = vault_keys(during)
    # Vault holds exactly what clients are handed: the new generation's keys, not the old ones.
    assert delivered == secrets(during)["qdrant-api-keys"]
    assert delivered["api-key"] != vault_keys(before)["api-key"]
    assert verify(delivered["read-only-api-key"], delivered["api-key"]) == {"access": "r"}
    assert server_config(during)["api_key"] == delivered["api-key"]
    # The revocation changes what Qdrant accepts, not what Vault holds.
    assert vault_keys(run(run_stack, scratch_project, 1, revoked=True)) == delivered
