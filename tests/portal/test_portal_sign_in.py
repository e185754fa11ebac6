"""The portal's sign-in and session, over real HTTP: Keycloak's code + PKCE flow (against a stand-in
token endpoint), the session cookie's flags, CSRF on writes, expiry back to sign-in, the dev sign-in
only without Keycloak, and the Content-Security-Policy on every page."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant

SESSION = "__Host-tenancy-session"
LOGIN = "__Host-tenancy-login"


class TokenEndpoint:
    """Keycloak's token endpoint, as far as the portal uses it: code + PKCE verifier -> access token."""

    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer
        self.challenge = ""
        self.seen: list[dict[str, str]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                endpoint.seen.append(form)
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                proof = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if form.get("code") != "the-code" or proof != endpoint.challenge:
                    self.send_response(400)
                    body = b'{"error": "invalid_grant"}'
                else:
                    self.send_response(200)
                    token = endpoint.issuer.admin_of("acme", azp="tenant-portal")
                    body = json.dumps({"access_token": token, "token_type": "Bearer"}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"


@pytest.fixture
def keycloak(issuer: Issuer) -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint(issuer)
    yield endpoint
    endpoint.server.shutdown()


@pytest.fixture
def live(
    make_app: AppFactory, serve: Any, keycloak: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> LiveServer:
    monkeypatch.setenv("TENANCY_SERVICE_PORTAL_TOKEN_URL", keycloak.url)
    app, _ = make_app(workers=0)
    create_tenant(app, "acme")
    server: LiveServer = serve(app)
    return server


def _cookie(response: httpx.Response, name: str) -> tuple[str, str]:
    header = next(h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}="))
    return header.split(";", 1)[0].split("=", 1)[1], header.lower()


def _sign_in(live: LiveServer, keycloak: TokenEndpoint) -> str:
    start = httpx.get(f"{live.url}/auth/login")
    assert start.status_code == 303
    target = urlparse(start.headers["location"])
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert target.path.endswith("/protocol/openid-connect/auth")
    assert query["client_id"] == "tenant-portal" and query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == f"{live.url}/auth/callback"
    keycloak.challenge = query["code_challenge"]
    state, login_flags = _cookie(start, LOGIN)
    assert state == query["state"] and "httponly" in login_flags and "secure" in login_flags
    back = httpx.get(
        f"{live.url}/auth/callback",
        params={"code": "the-code", "state": state},
        headers={"Cookie": f"{LOGIN}={state}"},
    )
    assert back.status_code == 303 and back.headers["location"] == "/", back.headers
    session, flags = _cookie(back, SESSION)
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= {part.strip() for part in flags.split(";")}
    assert keycloak.seen[-1]["client_id"] == "tenant-portal"  # a public client: no secret sent
    assert "client_secret" not in keycloak.seen[-1]
    return session


def test_keycloak_sign_in_with_pkce_gives_a_session_the_api_accepts(
    live: LiveServer, keycloak: TokenEndpoint
) -> None:
    session = _sign_in(live, keycloak)
    with httpx.Client(base_url=live.url, headers={"Cookie": f"{SESSION}={session}"}) as browser:
        me = browser.get("/auth/session").json()
        assert me["signedIn"] and me["tenants"] == {"acme": "tenant-admin"} and me["mode"] == "oidc"
        assert "token" not in json.dumps(me).lower().replace("csrf", "")  # the page never sees a token
        assert [t["name"] for t in browser.get("/api/v1/tenants").json()["tenants"]] == ["acme"]
        # A cookie alone changes nothing: writes need the session's CSRF token.
        patch = {"displayName": "ACME"}
        refused = browser.patch("/api/v1/environments/dev/tenants/acme", json=patch)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
        accepted = browser.patch(
            "/api/v1/environments/dev/tenants/acme", json=patch, headers={"X-CSRF-Token": me["csrf"]}
        )
        assert accepted.status_code == 202, accepted.text
        out = browser.post("/auth/logout", headers={"X-CSRF-Token": me["csrf"]})
        assert out.json()["redirect"].startswith("https://auth.test.example/realms/platform/protocol")
        assert browser.get("/auth/session").json()["signedIn"] is False
        assert browser.get("/api/v1/tenants").status_code == 401


def test_a_callback_this_browser_did_not_start_is_refused(live: LiveServer, keycloak: TokenEndpoint) -> None:
    start = httpx.get(f"{live.url}/auth/login")
    state, _ = _cookie(start, LOGIN)
    forged = httpx.get(
        f"{live.url}/auth/callback",
        params={"code": "the-code", "state": state},
        headers={"Cookie": f"{LOGIN}=someone-elses"},
    )
    assert forged.headers["location"] == "/?signin_error=state"
    assert not any(h.startswith(SESSION) for h in forged.headers.get_list("set-cookie"))


def test_an_expired_session_returns_to_sign_in(live: LiveServer, issuer: Issuer) -> None:
    expired = issuer.admin_of("acme", exp=int(time.time()) - 120)
    session_id, _ = live.app.state.portal_sessions.create(expired, time.time() + 60, via="oidc")
    with httpx.Client(base_url=live.url, headers={"Cookie": f"{SESSION}={session_id}"}) as browser:
        assert browser.get("/api/v1/tenants").status_code == 401
        assert browser.get("/auth/session").json() == {"signedIn": False, "mode": "oidc"}


def test_the_dev_sign_in_exists_only_without_keycloak(live: LiveServer, serve: Any, tmp_path: Any) -> None:
    from tenancy.service.app import create_app
    from tenancy.service.core.config import ServiceSettings
    from tests.conftest import PROJECT_DIR
    from tests.service.conftest import TenantEngine

    body = {"name": "dev", "tenants": ["acme"]}
    assert httpx.post(f"{live.url}/auth/dev", json=body).status_code == 404
    assert httpx.get(f"{live.url}/auth/config").json() == {"mode": "oidc"}
    settings = ServiceSettings(state_dir=tmp_path / "local", project_dir=PROJECT_DIR, workers=0)
    app = create_app(settings, engine=TenantEngine())
    local: LiveServer = serve(app)
    assert httpx.get(f"{local.url}/auth/config").json() == {"mode": "dev"}
    signed = httpx.post(f"{local.url}/auth/dev", json=body)
    assert signed.status_code == 200
    session, _ = _cookie(signed, SESSION)
    me = httpx.get(f"{local.url}/auth/session", headers={"Cookie": f"{SESSION}={session}"}).json()
    assert me["tenants"] == {"acme": "tenant-admin"} and me["mode"] == "dev"


def test_every_page_carries_a_strict_content_security_policy(live: LiveServer) -> None:
    for path in ("/", "/portal/static/app.js", "/portal/static/app.css"):
        response = httpx.get(f"{live.url}{path}")
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "http" not in policy  # nothing from another origin
    # The README states the policy exactly as it is sent (a reader checks what the portal allows).
    from tests.conftest import PROJECT_DIR

    readme = " ".join((PROJECT_DIR / "README.md").read_text().split())
    stated = readme.split("**Strict CSP** on every portal response: `", 1)[1].split("`", 1)[0]
    assert stated == policy
    page = httpx.get(f"{live.url}/").text
    assert "<script>" not in page and "style=" not in page  # no inline code for the policy to allow
    assert httpx.get(f"{live.url}/portal/static/../../core/config.py").status_code == 404
