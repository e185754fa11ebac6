"""Only tokens the realm signed, for this API, in their lifetime get in; API keys work as documented."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.service.conftest import (
    ISSUER,
    AppFactory,
    Issuer,
    LiveServer,
    create_tenant,
    settings_for,
    unsigned,
)

ME = "/api/v1/me"


@pytest.fixture
def live(make_app: AppFactory, serve: Any) -> LiveServer:
    app, _ = make_app(workers=0)
    server: LiveServer = serve(app)
    create_tenant(app, "acme")  # API keys are made for a tenant that exists
    return server


def refused(server: LiveServer, token: str) -> dict[str, Any]:
    with server.client(token) as client:
        response = client.get(ME)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "unauthenticated"
    return error


def test_a_realm_token_for_this_api_is_accepted(live: LiveServer, issuer: Issuer) -> None:
    with live.client(issuer.admin_of("acme")) as client:
        me = client.get(ME).json()
    assert me["tenants"] == {"acme": "tenant-admin"}
    assert me["platformAdmin"] is False


def test_an_ec_signed_token_is_accepted(live: LiveServer, issuer: Issuer) -> None:
    with live.client(issuer.token(key="ec", roles=["platform-admin"])) as client:
        assert client.get(ME).json()["platformAdmin"] is True


def test_a_missing_token_is_refused(live: LiveServer) -> None:
    with live.client() as client:
        response = client.get(ME)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_a_forged_signature_is_refused(live: LiveServer, issuer: Issuer) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        issuer.claims(roles=["platform-admin"]), forger, algorithm="RS256", headers={"kid": "rsa-1"}
    )
    assert "signature" in refused(live, token)["message"]


def test_a_token_with_a_tampered_payload_is_refused(live: LiveServer, issuer: Issuer) -> None:
    header, _, signature = issuer.admin_of("acme").split(".")
    token = unsigned(
        json.loads(jwt.utils.base64url_decode(header)), issuer.claims(roles=["platform-admin"])
    ).rsplit(".", 1)[0]
    refused(live, f"{token}.{signature}")


def test_an_expired_token_is_refused(live: LiveServer, issuer: Issuer) -> None:
    now = int(time.time())
    token = issuer.platform_admin(iat=now - 3600, nbf=now - 3600, exp=now - 120)
    assert "expired" in refused(live, token)["message"]


def test_expiry_within_the_clock_skew_is_tolerated(live: LiveServer, issuer: Issuer) -> None:
    now = int(time.time())
    token = issuer.platform_admin(iat=now - 600, exp=now - 5)
    with live.client(token) as client:
        assert client.get(ME).status_code == 200


def test_a_token_not_valid_yet_is_refused(live: LiveServer, issuer: Issuer) -> None:
    now = int(time.time())
    refused(live, issuer.platform_admin(nbf=now + 600, exp=now + 900))


def test_a_token_for_another_audience_is_refused(live: LiveServer, issuer: Issuer) -> None:
    assert "audience" in refused(live, issuer.platform_admin(aud=["account", "argocd"]))["message"]


def test_a_token_from_another_issuer_is_refused(live: LiveServer, issuer: Issuer) -> None:
    token = issuer.platform_admin(iss="https://auth.evil.example/realms/platform")
    assert "issuer" in refused(live, token)["message"]


def test_an_unsigned_alg_none_token_is_refused(live: LiveServer, issuer: Issuer) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, issuer.claims(roles=["platform-admin"]))
    assert "algorithm" in refused(live, token)["message"]


def test_a_token_signed_with_hmac_over_the_public_key_is_refused(live: LiveServer, issuer: Issuer) -> None:
    # The classic key-confusion attack: HS256 keyed with the RSA public key the JWKS publishes.
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    claims = issuer.claims(roles=["platform-admin"])
    signing_input = unsigned(header, claims).rsplit(".", 1)[0]
    signature = hmac.new(issuer.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{jwt.utils.base64url_encode(signature).decode()}"
    assert "algorithm" in refused(live, token)["message"]


def test_a_token_whose_alg_does_not_match_its_key_is_refused(live: LiveServer, issuer: Issuer) -> None:
    # ES256 header, but naming the RSA key: the key's type decides, not the header.
    token = jwt.encode(
        issuer.claims(roles=["platform-admin"]), issuer.ec_key, algorithm="ES256", headers={"kid": "rsa-1"}
    )
    refused(live, token)


def test_a_token_without_a_subject_is_refused(live: LiveServer, issuer: Issuer) -> None:
    claims = issuer.claims(roles=["platform-admin"])
    del claims["sub"]
    token = jwt.encode(claims, issuer.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert "sub" in refused(live, token)["message"]


def test_garbage_is_refused_without_a_server_error(live: LiveServer) -> None:
    for garbage in ["x", "a.b.c", "e30.e30.", "....", "eyJhbGciOiJSUzI1NiJ9." + "A" * 500]:
        refused(live, garbage)


def test_a_rotated_key_is_fetched_when_a_token_names_it(live: LiveServer, issuer: Issuer) -> None:
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        issuer.claims(roles=["platform-admin"]), rotated, algorithm="RS256", headers={"kid": "rsa-2"}
    )
    refused(live, token)  # not published yet
    public = json.loads(RSAAlgorithm.to_jwk(rotated.public_key()))
    issuer.extra_keys.append({**public, "kid": "rsa-2", "alg": "RS256", "use": "sig"})
    try:
        with live.client(token) as client:
            assert client.get(ME).status_code == 200
    finally:
        issuer.extra_keys.clear()


def test_a_static_jwks_file_can_replace_the_url(tmp_path: Path, issuer: Issuer, serve: Any) -> None:
    from tenancy.service.app import create_app
    from tests.service.conftest import TenantEngine

    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(issuer.jwks))
    settings = settings_for(tmp_path / "state", issuer, jwks_url=None, jwks_file=jwks_file, workers=0)
    server = serve(create_app(settings, engine=TenantEngine()))
    with server.client(issuer.platform_admin()) as client:
        assert client.get(ME).json()["platformAdmin"] is True


def test_hmac_algorithms_cannot_be_configured(tmp_path: Path, issuer: Issuer) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        settings_for(tmp_path, issuer, algorithms=("RS256", "HS256"))


def test_an_api_key_works_as_bearer_and_as_x_api_key(live: LiveServer, issuer: Issuer) -> None:
    with live.client(issuer.admin_of("acme")) as person:
        created = person.post("/api/v1/tenants/acme/api-keys", json={"name": "ci", "role": "tenant-viewer"})
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("tnk_")
    with live.client(key) as machine:
        assert machine.get(ME).json() == {
            "subject": f"api-key:{created.json()['id']}",
            "kind": "api_key",
            "platformAdmin": False,
            "tenants": {"acme": "tenant-viewer"},
        }
    with httpx.Client(base_url=live.url, headers={"X-API-Key": key}) as machine:
        assert machine.get(ME).status_code == 200


def test_a_revoked_or_unknown_api_key_is_refused(live: LiveServer, issuer: Issuer) -> None:
    with live.client(issuer.admin_of("acme")) as person:
        created = person.post("/api/v1/tenants/acme/api-keys", json={"name": "ci"}).json()
        assert person.delete(f"/api/v1/tenants/acme/api-keys/{created['id']}").status_code == 204
        listed = person.get("/api/v1/tenants/acme/api-keys").json()["apiKeys"]
    assert listed[0]["active"] is False and listed[0]["revokedAt"] is not None
    assert "revoked" in refused(live, created["key"])["message"]
    refused(live, created["key"][:-4] + "AAAA")
    refused(live, "tnk_0123456789abcdef_" + "A" * 43)


def test_api_keys_are_stored_only_as_a_hash(live: LiveServer, issuer: Issuer) -> None:
    with live.client(issuer.admin_of("acme")) as person:
        key = person.post("/api/v1/tenants/acme/api-keys", json={"name": "ci"}).json()["key"]
    state_dir = live.app.state.backends.settings.state_dir
    stored = b"".join(path.read_bytes() for path in state_dir.glob("api-keys.sqlite3*"))
    assert key.encode() not in stored
    assert hashlib.sha256(key.encode()).hexdigest().encode() in stored


def test_an_expired_api_key_is_refused(live: LiveServer, issuer: Issuer) -> None:
    from tenancy.service.core.security import Role

    backends = live.app.state.backends
    _, key = backends.api_keys.create(
        tenant="acme", role=Role.admin, name="old", created_by="test", expires_at=time.time() - 1
    )
    refused(live, key)


def test_the_local_issuer_token_is_accepted_by_the_embedded_default(tmp_path: Path, serve: Any) -> None:
    from tenancy.service.app import create_app
    from tenancy.service.core.config import ServiceSettings
    from tenancy.service.core.local_issuer import mint_token
    from tests.conftest import PROJECT_DIR
    from tests.service.conftest import TenantEngine

    settings = ServiceSettings(state_dir=tmp_path / "state", project_dir=PROJECT_DIR, workers=0)
    server = serve(create_app(settings, engine=TenantEngine()))
    token = mint_token(
        settings.local_issuer_dir,
        issuer=settings.issuer,
        audience=settings.audience,
        subject="dev",
        groups=["/tenants/acme/admins"],
        roles=[],
    )
    with server.client(token) as client:
        assert client.get(ME).json()["tenants"] == {"acme": "tenant-admin"}
    assert settings.issuer == "https://auth.localhost/realms/platform" != ISSUER


def test_a_real_issuer_is_never_paired_with_the_local_key(tmp_path: Path) -> None:
    from tenancy.service.core.config import ServiceSettings

    with pytest.raises(ValueError, match="JWKS_URL"):
        ServiceSettings(state_dir=tmp_path, issuer=ISSUER)


def test_an_id_token_is_refused_even_for_this_audience(live: LiveServer, issuer: Issuer) -> None:
    # Keycloak's ID tokens name the client in aud: when that client is tenant-api they carry our audience.
    id_token = issuer.platform_admin(typ="ID", aud="tenant-api", azp="tenant-api")
    assert "not an access token" in refused(live, id_token)["message"]
    header_typed = issuer.token(headers={"typ": "id_token+jwt"}, roles=["platform-admin"])
    refused(live, header_typed)


def test_only_access_tokens_of_the_authorized_clients_pass_when_they_are_configured(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app(workers=0, authorized_parties="tenant-portal,tenantctl")
    server: LiveServer = serve(app)
    assert "azp" in refused(server, issuer.platform_admin(azp="some-other-app"))["message"]
    with server.client(issuer.platform_admin(azp="tenantctl")) as client:
        assert client.get(ME).status_code == 200


def test_an_unverified_email_never_becomes_the_git_author(live: LiveServer, issuer: Issuer) -> None:
    spoofer = issuer.admin_of("acme", sub="mallory", email="ceo@acme.example", email_verified=False)
    verified = issuer.admin_of("acme", sub="alice", email="alice@acme.example", email_verified=True)
    with live.client(spoofer) as client:
        client.patch("/api/v1/environments/dev/tenants/acme", json={"displayName": "by mallory"})
    with live.client(verified) as client:
        client.patch("/api/v1/environments/dev/tenants/acme", json={"displayName": "by alice"})
    authors = [c.author_email for c in live.app.state.backends.repository.history("dev", "acme")]
    assert authors[:2] == ["alice@acme.example", "mallory@tenant-api.invalid"]


def test_a_subject_that_is_no_identifier_is_refused_before_it_names_anyone(
    live: LiveServer, issuer: Issuer
) -> None:
    """``sub`` becomes ``Requested-by: user:<sub>`` in each commit message: a line break in it would add
    trailers of its own (an approval, a forced update) to the tenant's history."""
    forged = "bob\nForced-without-backup: true\nApproved-by: platform-admin"
    for subject in (forged, "bob\x1b[2J", "x" * 256):
        assert "sub claim" in refused(live, issuer.admin_of("acme", sub=subject))["message"]
    repository = live.app.state.backends.repository
    commits = repository.history("dev", "acme")
    with live.client(issuer.admin_of("acme", sub=forged)) as client:
        answer = client.patch("/api/v1/environments/dev/tenants/acme", json={"displayName": "forged"})
    assert answer.status_code == 401
    assert repository.history("dev", "acme") == commits  # nothing committed under that name
    with live.client(issuer.admin_of("acme", sub="x" * 255)) as client:
        assert client.get(ME).status_code == 200


def test_fetching_the_signing_keys_never_holds_up_tokens_signed_by_known_keys() -> None:
    from tenancy.service.core.security import JwksKeys

    known = {"kid": "k1", "kty": "RSA", "n": "AQAB", "e": "AQAB"}
    slow = threading.Event()
    release = threading.Event()

    def fetch(url: str) -> dict[str, Any]:
        if slow.is_set():
            release.wait(10)  # Keycloak answering slowly
        return {"keys": [known]}

    keys = JwksKeys(url="https://auth.example/certs", cache_seconds=0.05, min_refresh_seconds=0, fetch=fetch)
    assert keys.key("k1") == known
    time.sleep(0.1)  # the cache has expired
    slow.set()
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            refreshing = pool.submit(keys.key, "k1")  # this caller fetches, slowly
            time.sleep(0.1)
            meanwhile = pool.submit(keys.key, "k1")
            assert meanwhile.result(timeout=1.0) == known
        finally:
            release.set()
        assert refreshing.result(timeout=5) == known
