"""The local issuer: a key pair in ``<state_dir>/local-issuer`` that stands in for Keycloak on a laptop.

``tenantctl serve`` makes it when it starts and trusts its JWKS when no Keycloak JWKS is configured;
``tenantctl dev-token`` signs tokens with it that carry the same claims Keycloak would (iss, aud,
groups, roles), and refuses where no service made one (a key of its own would sign tokens that no
running service trusts). The private
key never leaves that directory; a deployment that sets TENANCY_SERVICE_JWKS_URL ignores it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

PRIVATE_KEY_FILE = "signing-key.pem"
JWKS_FILE = "jwks.json"


def ensure_local_issuer(directory: Path) -> Path:
    """Create the local issuer's key pair and JWKS unless they exist; return the JWKS path."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / PRIVATE_KEY_FILE
    jwks_path = directory / JWKS_FILE
    if key_path.is_file() and jwks_path.is_file():
        return jwks_path
    # One maker at a time (processes of the service, ``tenantctl dev-token``): two would each write
    # a key, and tokens signed with the one overwritten would not verify.
    descriptor = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        if not (key_path.is_file() and jwks_path.is_file()):
            _make_key_pair(key_path, jwks_path)
    finally:
        os.close(descriptor)
    return jwks_path


def _make_key_pair(key_path: Path, jwks_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    public: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    public.update(kid=f"local-{uuid.uuid4().hex[:8]}", alg="RS256", use="sig")
    jwks_path.write_text(json.dumps({"keys": [public]}, indent=2), encoding="utf-8")


def mint_token(
    directory: Path,
    *,
    issuer: str,
    audience: str,
    subject: str,
    groups: list[str],
    roles: list[str],
    email: str | None = None,
    lifetime_seconds: int = 3600,
) -> str:
    """A token signed by the local issuer, shaped like the platform realm's access tokens."""
    ensure_local_issuer(directory)
    jwks = json.loads((directory / JWKS_FILE).read_text(encoding="utf-8"))
    kid = jwks["keys"][0]["kid"]
    private_key = serialization.load_pem_private_key(
        (directory / PRIVATE_KEY_FILE).read_bytes(), password=None
    )
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": [audience],
        "typ": "Bearer",  # an access token, as Keycloak marks them
        "sub": subject,
        "preferred_username": subject,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_seconds,
        "groups": groups,
        "roles": roles,
    }
    if email:
        # Whoever runs the local issuer vouches for the address (Keycloak sets this after verifying).
        claims["email"] = email
        claims["email_verified"] = True
    return jwt.encode(claims, private_key, algorithm="RS256", headers={"kid": kid})  # type: ignore[arg-type]
