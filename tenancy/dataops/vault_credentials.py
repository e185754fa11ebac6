"""Object-store credentials the backup job gets from Vault at run time, never from a Secret.

The job logs in with its projected service-account token (audience ``vault``) to the Kubernetes-auth role
bound to its ServiceAccount, reads short-lived STS credentials from the AWS secrets engine role that is
limited to the tenant's prefix (tenancy.builders.backup), then revokes its Vault token. Errors name the
step and Vault's status, never a token or a key.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


class VaultCredentialsError(RuntimeError):
    """Vault refused or failed the login or the read; the message says which and what to check."""


@dataclass(frozen=True)
class ObjectStoreCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None

    def __repr__(self) -> str:  # never in a log line or a traceback
        return "ObjectStoreCredentials(<redacted>)"


def _json(response: httpx.Response, step: str) -> dict[str, Any]:
    if response.status_code >= 400:
        errors = []
        with contextlib.suppress(ValueError):
            errors = [str(e) for e in response.json().get("errors", [])][:2]
        detail = f": {'; '.join(errors)}" if errors else ""
        raise VaultCredentialsError(f"{step} failed with HTTP {response.status_code}{detail}")
    try:
        body = response.json()
    except ValueError:
        raise VaultCredentialsError(f"{step} answered something other than JSON") from None
    if not isinstance(body, dict):
        raise VaultCredentialsError(f"{step} answered an unexpected document")
    return body


def object_store_credentials(
    *,
    address: str,
    auth_path: str,
    role: str,
    credentials_path: str,
    token_file: Path,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> ObjectStoreCredentials:
    """Log in as ``role`` with the token in ``token_file`` and read ``credentials_path``."""
    try:
        jwt = token_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise VaultCredentialsError(
            f"the service-account token {token_file} cannot be read ({type(error).__name__}); "
            "the pod needs the projected vault-token volume"
        ) from None
    with httpx.Client(base_url=address.rstrip("/"), timeout=timeout, transport=transport) as client:
        try:
            login = _json(
                client.post(f"/v1/auth/{auth_path}/login", json={"role": role, "jwt": jwt}),
                f"login to Vault (auth/{auth_path}, role {role})",
            )
            token = str((login.get("auth") or {}).get("client_token") or "")
            if not token:
                raise VaultCredentialsError(f"login to Vault (role {role}) returned no token")
            headers = {"X-Vault-Token": token}
            try:
                read = _json(
                    client.get(f"/v1/{credentials_path}", headers=headers), f"read of {credentials_path}"
                )
            finally:
                # The login token is useless after this read: revoke it rather than let it live its TTL.
                with contextlib.suppress(httpx.HTTPError):
                    client.post("/v1/auth/token/revoke-self", headers=headers)
        except httpx.HTTPError as error:
            raise VaultCredentialsError(f"Vault at {address} unreachable: {type(error).__name__}") from None
    data = read.get("data") or {}
    access, secret = data.get("access_key"), data.get("secret_key")
    if not isinstance(access, str) or not isinstance(secret, str):
        raise VaultCredentialsError(f"{credentials_path} returned no access_key/secret_key")
    session = data.get("security_token") or data.get("session_token")
    return ObjectStoreCredentials(access, secret, str(session) if session else None)
