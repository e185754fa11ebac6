"""Strict input through the real HTTP app: no type conversion, no control or formatting characters in
any string, JSON bodies bounded in size and depth before parsing. Each answers a 4xx with a stable
code and a message naming the problem, and nothing is committed or queued. The tenant files'
validator refuses the same documents, so a pull request cannot commit what the API refuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tenancy.cli import app as cli
from tenancy.cli.exit_codes import INVALID_INPUT
from tests.service.conftest import Issuer, LiveServer, create_tenant

ACME = "/api/v1/environments/dev/tenants/acme"
NEWCO = "/api/v1/environments/dev/tenants/newco"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[LiveServer]:
    from tenancy.service.app import create_app
    from tests.service.conftest import TenantEngine, settings_for

    settings = settings_for(tmp_path_factory.mktemp("strict") / "state", issuer, workers=0)
    application = create_app(settings, engine=TenantEngine())
    create_tenant(application, "acme")
    with LiveServer(application) as server:
        yield server


@pytest.fixture
def admin(live: LiveServer, issuer: Issuer) -> Iterator[httpx.Client]:
    with live.client(issuer.platform_admin()) as client:
        yield client


def _state(server: LiveServer) -> tuple[str, str | None, int]:
    """What a refused request must leave alone: git HEAD, acme's file, the number of operations."""
    backends = server.app.state.backends
    head = backends.repository._run("rev-parse", "HEAD").stdout.strip()
    return head, backends.repository.read_text("dev", "acme"), len(backends.queue.recent(limit=1000))


def _refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert "Traceback" not in response.text
    return error


# --- no conversions ------------------------------------------------------------------------------

CONVERSIONS = [
    ({"qdrant": {"enabled": True, "replicas": "1"}}, "qdrant.replicas", "whole number", "not a string"),
    ({"qdrant": {"enabled": True, "replicas": True}}, "qdrant.replicas", "whole number", "not a boolean"),
    ({"qdrant": {"enabled": True, "replicas": 2.0}}, "qdrant.replicas", "whole number", "decimal"),
    ({"qdrant": {"enabled": 1}}, "qdrant.enabled", "true or false", "not a number"),
    ({"deletionProtection": 0}, "deletionProtection", "true or false", "not a number"),
    ({"deletionProtection": "false"}, "deletionProtection", "true or false", "not a string"),
    ({"displayName": 42}, "displayName", "must be a string", "not a number"),
]


@pytest.mark.parametrize(("patch", "field", "expected", "sent"), CONVERSIONS)
def test_a_value_of_the_wrong_type_is_refused_not_converted(
    live: LiveServer, admin: httpx.Client, patch: dict[str, Any], field: str, expected: str, sent: str
) -> None:
    before = _state(live)
    error = _refused(admin.patch(ACME, json=patch), 422, "invalid_spec")
    assert "dev.acme is invalid" in error["message"]
    [detail] = error["details"]
    assert detail["field"] == field
    assert expected in detail["reason"] and sent in detail["reason"]
    assert _state(live) == before


def test_a_create_with_a_converted_value_creates_nothing(live: LiveServer, admin: httpx.Client) -> None:
    before = _state(live)
    document = {"owners": ["me@newco.example"], "plan": "small", "qdrant": {"enabled": "true"}}
    error = _refused(admin.put(NEWCO, json=document), 422, "invalid_spec")
    assert error["details"] == [{"field": "qdrant.enabled", "reason": "must be true or false, not a string"}]
    assert live.app.state.backends.repository.read("dev", "newco") is None
    assert _state(live) == before


def test_api_key_requests_are_strict_too(live: LiveServer, admin: httpx.Client) -> None:
    keys = "/api/v1/tenants/acme/api-keys"
    before = admin.get(keys).json()["apiKeys"]
    for body, field in [
        ({"name": "ci", "expiresInDays": "30"}, "body.expiresInDays"),
        ({"name": "ci", "expiresInDays": True}, "body.expiresInDays"),
    ]:
        error = _refused(admin.post(keys, json=body), 422, "invalid_request")
        assert error["details"][0]["field"] == field
        assert "integer" in error["details"][0]["reason"]
    assert admin.get(keys).json()["apiKeys"] == before


# --- no control or formatting characters ---------------------------------------------------------

CHARACTERS = [
    ({"owners": ["me\u0000@acme.example"]}, "owners.0", "U+0000 NUL"),
    ({"owners": ["me\u001b[31m@acme.example"]}, "owners.0", "U+001B ESC"),
    ({"displayName": "ACME\u0085Corp"}, "displayName", "U+0085"),
    ({"displayName": "ACME\u202eproC"}, "displayName", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ({"displayName": "ACME\u2066"}, "displayName", "U+2066 LEFT-TO-RIGHT ISOLATE"),
    ({"displayName": "line\nbreak"}, "displayName", "U+000A LF"),
    ({"labels": {"team": "search\u0007"}}, "labels.team", "U+0007"),
    ({"labels": {"te\u001bam": "search"}}, "labels", "a key contains"),
    ({"qdrant": {"storage": {"storageClass": "fast\u0000"}}}, "qdrant.storage.storageClass", "NUL"),
]


@pytest.mark.parametrize(("patch", "field", "named"), CHARACTERS)
def test_control_and_formatting_characters_are_refused_in_every_string(
    live: LiveServer, admin: httpx.Client, patch: dict[str, Any], field: str, named: str
) -> None:
    before = _state(live)
    error = _refused(admin.patch(ACME, json=patch), 422, "invalid_character")
    assert field in error["message"]
    [detail] = error["details"]
    assert detail["field"] == field and named in detail["reason"]
    assert _state(live) == before


def test_a_lone_surrogate_is_refused(live: LiveServer, admin: httpx.Client) -> None:
    before = _state(live)
    body = b'{"displayName": "x\\ud800y"}'
    response = admin.patch(ACME, content=body, headers={"Content-Type": "application/merge-patch+json"})
    error = _refused(response, 422, "invalid_character")
    assert error["details"][0]["reason"].startswith("contains the control or formatting character U+D800")
    assert _state(live) == before


# --- bounded bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [17, 300, 20_000])
def test_deeply_nested_json_is_refused_before_it_is_parsed(
    live: LiveServer, admin: httpx.Client, depth: int
) -> None:
    before = _state(live)
    body = '{"labels": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    error = _refused(admin.patch(ACME, content=body.encode()), 422, "json_too_deep")
    assert error["message"] == f"the JSON body nests {depth} levels deep; at most 16 are accepted"
    assert _state(live) == before


def test_a_body_that_is_not_utf8_is_refused_not_passed_unchecked_to_the_route(
    live: LiveServer, admin: httpx.Client
) -> None:
    """Found by an outside security review: one raw lone surrogate (bytes ED A0 80, which the route's
    JSON parser reads as a character) made the body check give up, so a change-request reason holding
    terminal escapes, or a body nesting 900 levels, reached the route unchecked."""
    before = _state(live)
    sneaky = b'{"labels": {"\xed\xa0\x80": null, "deep": ' + b"[" * 900 + b"]" * 900 + b"}}"
    error = _refused(admin.patch(ACME, content=sneaky), 400, "bad_request")
    assert error["message"] == "the body is not UTF-8 text; JSON bodies are UTF-8"
    assert error["details"][0]["field"] == "body"
    assert error["details"][0]["reason"].startswith("byte 13 (0xed) does not decode as UTF-8")
    reason = b'{"reason": "routine\x1b[8m", "patch": {"plan": "large", "labels": {"\xed\xa0\x80": null}}}'
    _refused(admin.post(ACME + "/change-requests", content=reason), 400, "bad_request")
    assert _state(live) == before


def test_brackets_inside_strings_are_not_nesting(live: LiveServer, admin: httpx.Client) -> None:
    response = admin.patch(ACME, json={"displayName": "[" * 40 + "{" * 40 + '\\"[['})
    assert response.status_code == 202, response.text


def test_nan_and_infinity_are_not_json(live: LiveServer, admin: httpx.Client) -> None:
    before = _state(live)
    for constant in ("NaN", "Infinity", "-Infinity"):
        body = f'{{"qdrant": {{"replicas": {constant}}}}}'.encode()
        error = _refused(admin.patch(ACME, content=body), 422, "invalid_request")
        assert constant.lstrip("-") in error["message"]
    assert _state(live) == before


def test_an_oversized_body_is_refused_even_without_a_content_length(
    live: LiveServer, admin: httpx.Client
) -> None:
    before = _state(live)

    def chunks() -> Iterator[bytes]:
        yield b'{"displayName": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    error = _refused(admin.patch(ACME, content=chunks()), 413, "payload_too_large")
    assert "65536 bytes" in error["message"]
    assert _state(live) == before


def test_a_body_that_is_not_json_is_a_clear_422(live: LiveServer, admin: httpx.Client) -> None:
    before = _state(live)
    _refused(admin.patch(ACME, content=b'{"displayName": '), 422, "invalid_request")
    assert _state(live) == before


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",  # what `curl -d` sends without -H 'Content-Type: ...'
        "text/plain",
        "application/yaml",  # a tenant file's text sent as it is
    ],
)
def test_a_body_sent_as_another_media_type_is_a_415_naming_the_type_to_send(
    live: LiveServer, admin: httpx.Client, content_type: str
) -> None:
    before = _state(live)
    headers = {"Content-Type": content_type}
    document = json.dumps({"owners": ["me@newco.example"], "plan": "small"})
    refused = [
        admin.put(NEWCO, content=document, headers=headers),
        admin.patch(ACME, content=json.dumps({"displayName": "ACME"}), headers=headers),
        admin.post(f"{ACME}/qdrant/keys/rotate", content=json.dumps({"grace": "2h"}), headers=headers),
        admin.post("/api/v1/tenants/acme/api-keys", content=json.dumps({"role": "viewer"}), headers=headers),
    ]
    for response in refused:
        error = _refused(response, 415, "unsupported_media_type")
        assert repr(content_type) in error["message"], error
        assert "Content-Type: application/json" in error["message"], error
    # Chunked, without a Content-Length, the same.
    error = _refused(
        admin.patch(ACME, content=iter([b'{"displayName":', b' "ACME"}']), headers=headers),
        415,
        "unsupported_media_type",
    )
    assert _state(live) == before


def test_a_request_without_a_body_may_carry_any_content_type(live: LiveServer, admin: httpx.Client) -> None:
    # No body to misread: the route answers as it would without the header (here: no such key).
    response = admin.delete("/api/v1/tenants/acme/api-keys/abc123", headers={"Content-Type": "text/plain"})
    _refused(response, 404, "api_key_not_found")
    approve = "/api/v1/change-requests/cr-0123456789ab/approve"
    _refused(admin.post(approve, headers={"Content-Type": "text/plain"}), 404, "change_request_not_found")


def test_json_media_types_pass(live: LiveServer, admin: httpx.Client) -> None:
    for content_type in ("application/merge-patch+json", "application/json; charset=utf-8"):
        response = admin.patch(
            ACME, content=b'{"labels": {"team": "search"}}', headers={"Content-Type": content_type}
        )
        assert response.status_code == 202, response.text


def test_a_valid_patch_still_passes(live: LiveServer, admin: httpx.Client) -> None:
    response = admin.patch(ACME, json={"displayName": "ACME — Sök & Co ✓", "labels": {"team": "search"}})
    assert response.status_code == 202, response.text


# --- the file validator refuses the same --------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ('qdrant: {enabled: true, replicas: "1"}', "qdrant.replicas", "whole number"),
        ("deletionProtection: 0", "deletionProtection", "true or false"),
        ('displayName: "ACME\\e[31m"', "displayName", "U+001B ESC"),
        ('owners: ["me\\0@acme.example"]', "owners.0", "U+0000 NUL"),
        ('labels: {team: "a\\u202Eb"}', "labels.team", "U+202E"),
    ],
)
def test_tenantctl_validate_refuses_what_the_api_refuses(
    tmp_path: Path, line: str, field: str, reason: str
) -> None:
    (tmp_path / "dev").mkdir()
    lines = ["name: acme", "plan: small", line]
    if not line.startswith("owners"):
        lines.append("owners: [me@acme.example]")
    (tmp_path / "dev" / "acme.yaml").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["validate", "--tenants", str(tmp_path), "--json"])
    assert result.exit_code == INVALID_INPUT, result.output
    [issue] = json.loads(result.stdout)["issues"]
    assert issue["field"] == field and reason in issue["reason"]
