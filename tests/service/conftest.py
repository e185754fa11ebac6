"""Fixtures for the service: a test issuer (RSA and EC keys served as a JWKS over local HTTP), apps
built on a scratch state directory, and the real app served by uvicorn on a loopback port."""

from __future__ import annotations

import base64
import gc
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tenancy.automation.contract import SECRET_MASK, StackRef
from tenancy.automation.fake_engine import FakeEngine
from tenancy.cli.serve import UVICORN_OPTIONS
from tenancy.service.app import create_app
from tenancy.service.core.config import ServiceSettings
from tests.conftest import PROJECT_DIR
from tests.ports import listening_socket

ISSUER = "https://auth.test.example/realms/platform"
AUDIENCE = "tenant-api"


def secret_key_of(stack: StackRef) -> str:
    """The Qdrant API key the engine double holds for a stack: distinctive, to grep for leaks."""
    return f"QDRANT-SECRET-{stack.environment}-{stack.tenant}-7f3a9c"


def kubeconfig_of(stack: StackRef) -> str:
    token = f"KUBE-SECRET-{stack.tenant}-e41d"
    return f"apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n    token: {token}\n"


class TenantEngine(FakeEngine):
    """The automation layer's engine double, with the secret outputs a tenant stack exports."""

    def outputs(self, stack: StackRef, *, reveal_secrets: bool = False) -> dict[str, Any]:
        outputs = super().outputs(stack, reveal_secrets=reveal_secrets)
        outputs["qdrantApiKey"] = secret_key_of(stack) if reveal_secrets else SECRET_MASK
        outputs["vclusterKubeconfig"] = kubeconfig_of(stack) if reveal_secrets else SECRET_MASK
        outputs["qdrantEndpoint"] = f"http://qdrant.tenant-{stack.tenant}.svc.cluster.local:6333"
        return outputs


@dataclass
class Issuer:
    """A stand-in for Keycloak: signing keys, their JWKS over HTTP, and tokens shaped like the realm's."""

    jwks_url: str
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    jwks: dict[str, Any]
    extra_keys: list[dict[str, Any]] = field(default_factory=list)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": [AUDIENCE, "account"],
            "sub": f"user-{uuid.uuid4().hex[:8]}",
            "typ": "Bearer",  # Keycloak's access tokens say so; its ID tokens say "ID"
            "azp": "tenant-portal",
            "preferred_username": "alice",
            "email": "alice@example.com",
            "email_verified": True,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "groups": [],
            "roles": [],
        }
        claims.update(overrides)
        return claims

    def token(self, *, key: str = "rsa", headers: dict[str, Any] | None = None, **overrides: Any) -> str:
        claims = self.claims(**overrides)
        if key == "rsa":
            return jwt.encode(
                claims, self.rsa_key, algorithm="RS256", headers={"kid": "rsa-1", **(headers or {})}
            )
        return jwt.encode(claims, self.ec_key, algorithm="ES256", headers={"kid": "ec-1", **(headers or {})})

    def admin_of(self, *tenants: str, **overrides: Any) -> str:
        return self.token(groups=[f"/tenants/{t}/admins" for t in tenants], **overrides)

    def viewer_of(self, *tenants: str, **overrides: Any) -> str:
        return self.token(groups=[f"/tenants/{t}/viewers" for t in tenants], **overrides)

    def platform_admin(self, **overrides: Any) -> str:
        return self.token(roles=["platform-admin"], **overrides)

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _jwk(key: Any, algorithm: Any, kid: str, alg: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    document.update(kid=kid, alg=alg, use="sig")
    return document


@pytest.fixture(autouse=True, scope="module")
def settled_heap() -> Iterator[None]:
    """What earlier test modules left alive (modules imported, session captures, pytest's items: about
    400,000 objects late in the suite) out of the cyclic collector's sight for this module, as
    ``tenantctl serve`` does with its start-up (cli.serve.settle_heap). Without it, each full
    collection a request triggers walks them all holding the GIL, 0.3-0.5 s of CPU that stalls the
    app's threads: at load 14-16, a change request's two renders plus one such pause took the test
    client past its 10 s timeout. Unfrozen after the module, so the rest of the suite collects as
    before (and nothing frozen here outlives it)."""
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [_jwk(rsa_key, RSAAlgorithm, "rsa-1", "RS256"), _jwk(ec_key, ECAlgorithm, "ec-1", "ES256")]
    }
    holder: dict[str, Issuer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            current = holder["issuer"]
            body = json.dumps({"keys": current.jwks["keys"] + current.extra_keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/realms/platform/protocol/openid-connect/certs"
    holder["issuer"] = Issuer(jwks_url=url, rsa_key=rsa_key, ec_key=ec_key, jwks=jwks)
    yield holder["issuer"]
    server.shutdown()


def settings_for(state_dir: Path, issuer: Issuer, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "project_dir": PROJECT_DIR,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": issuer.jwks_url,
        "jwks_min_refresh_seconds": 0,
        "rate_limit_requests": 10_000,
        "workers": 2,
        "sse_poll_seconds": 0.02,
        "pulumi_preview": False,
    }
    values.update(overrides)
    return ServiceSettings(**values)


AppFactory = Callable[..., tuple[FastAPI, TenantEngine]]


@pytest.fixture
def make_app(tmp_path: Path, issuer: Issuer) -> AppFactory:
    """Build an app on a scratch state directory with the engine double; keyword args are settings."""

    def build(engine: TenantEngine | None = None, **overrides: Any) -> tuple[FastAPI, TenantEngine]:
        engine = engine or TenantEngine()
        state_dir = overrides.pop("state_dir", tmp_path / "state")
        data = overrides.pop("data", None)  # TenantData: where tenants' Qdrant and backups are
        app = create_app(settings_for(state_dir, issuer, **overrides), engine=engine, data=data)
        return app, engine

    return build


class LiveServer:
    """The app served by uvicorn on a loopback port in a thread (lifespan included: workers run)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.socket = listening_socket()  # bound before anything else may take the port (tests/ports.py)
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = (
            uvicorn.Config(  # as `tenantctl serve` runs it (loop, parser; forwarding headers are the app's)
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", **UVICORN_OPTIONS
            )
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, **{"timeout": 10.0, **kwargs})


@pytest.fixture
def serve() -> Iterator[Callable[[FastAPI], LiveServer]]:
    started: list[LiveServer] = []

    def start(app: FastAPI) -> LiveServer:
        server = LiveServer(app).__enter__()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.__exit__()


def spec(name: str, **overrides: Any) -> dict[str, Any]:
    """A valid tenant document (small plan, Qdrant on, protection off unless overridden)."""
    document: dict[str, Any] = {
        "name": name,
        "owners": [f"owner@{name}.example"],
        "plan": "small",
        "deletionProtection": False,
        "qdrant": {"enabled": True},
    }
    document.update(overrides)
    return document


def create_tenant(app: FastAPI, name: str, environment: str = "dev", **overrides: Any) -> None:
    """Commit a tenant's file straight to the app's repository (as a merged pull request would)."""
    from tenancy.service.core.tenants_repo import GitAuthor

    app.state.backends.repository.write(
        environment,
        name,
        spec(name, **overrides),
        author=GitAuthor("Test", "test@example.com"),
        message=f"Create tenant {environment}.{name}",
    )


def commit_by_hand(checkout: Path, path: str, text: str | None, message: str) -> None:
    """Commit ``path`` as ``text`` (None: removed) to the service's checkout, as a merged pull request
    would, without its index or working copy: the service resets those to the branch after each of its
    commits, in the background, which could undo a file written there before ``git add`` read it."""
    import os
    import subprocess

    index = checkout / ".git" / "by-hand.index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}

    def git(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            ["git", "-C", str(checkout), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return done.stdout.strip()

    git("read-tree", "HEAD")
    if text is None:
        git("update-index", "--force-remove", path)
    else:
        blob = git("hash-object", "-w", "--stdin", stdin=text)
        git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
    git("-c", "user.name=P", "-c", "user.email=p@example.com", "commit", "-q", "-m", message)
    index.unlink(missing_ok=True)


def destroy_standing_stack(server: LiveServer, issuer: Issuer, path: str) -> None:
    """After a file was removed outside the service (a merged pull request), its stack stands and the
    name is refused until DELETE destroys it; this does, and waits until it has."""
    with server.client(issuer.platform_admin()) as admin:
        deleted = admin.delete(path)
        assert deleted.status_code == 202, deleted.text
        assert wait_for(admin, deleted.json()["operation"]["id"])["status"] == "succeeded"


def wait_for(client: httpx.Client, operation_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """Poll an operation until it finishes; return its JSON."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/api/v1/operations/{operation_id}").json()
        if body["status"] in ("succeeded", "failed", "superseded"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"operation {operation_id} still {body['status']}")
        time.sleep(0.02)


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join([part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)])


def write_on_first_read(
    repository: Any, monkeypatch: pytest.MonkeyPatch, write: Callable[[], None], *, wait: float
) -> threading.Thread:
    """Make the first ``repository.read`` start ``write`` (another process or replica changing the
    tenant) in a thread, right after that read, and wait up to ``wait`` seconds for it: how the
    reconcile tests put a writer between a reconcile's read and what it queues. The thread, to join."""
    done = threading.Event()

    def writing() -> None:
        write()
        done.set()

    writer = threading.Thread(target=writing)
    read = repository.read

    def read_then_write(environment: str, name: str) -> Any:
        found = read(environment, name)
        if not writer.is_alive() and not done.is_set():
            writer.start()
            done.wait(wait)  # at once when nothing holds the tenant up; else once it is free
        return found

    monkeypatch.setattr(repository, "read", read_then_write)
    return writer
