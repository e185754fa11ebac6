"""The job entry point as the CronJob runs it: settings from the environment, JSON lines out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tenancy.dataops.qdrant_api import QdrantCluster
from tests.conftest import PROJECT_DIR
from tests.dataops.conftest import BUCKET
from tests.dataops.qdrant_standin import API_KEY, ClusterState


def _env(tmp_path: Path, qdrant: QdrantCluster, s3_endpoint: str) -> dict[str, str]:
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    port = qdrant.url.rsplit(":", 1)[1]
    return {
        "PATH": "/usr/bin:/bin",
        "BACKUP_QDRANT_URL": qdrant.url,
        "BACKUP_QDRANT_API_KEY_FILE": str(key_file),
        "BACKUP_QDRANT_HTTP_PORT": port,  # the stand-in's peers each listen on their own port
        "BACKUP_BUCKET": BUCKET,
        "BACKUP_PREFIX": "tenants/dev/acme/qdrant",
        "BACKUP_S3_ENDPOINT": s3_endpoint,
        "BACKUP_S3_FORCE_PATH_STYLE": "true",
        "BACKUP_KEEP_LAST": "2",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def _job(env: dict[str, str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run(
        [sys.executable, "-m", "tenancy.dataops.job", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def test_the_job_backs_up_lists_and_restores_and_never_prints_the_key(
    cluster: tuple[ClusterState, QdrantCluster], s3: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    state, qdrant = cluster
    if len(state.peers) > 1:
        for peer in sorted(state.peers)[1:]:
            state.peers.pop(peer)  # one node: every peer address then shares the job's HTTP port
    state.add_collection("docs", shards=2, replication_factor=1, points=8)
    env = _env(tmp_path, qdrant, s3_endpoint)

    code, lines = _job(env, "backup")
    assert code == 0, lines
    result = lines[-1]
    assert result["event"] == "result" and result["backup"]["collections"] == ["docs"]
    assert all(API_KEY not in json.dumps(line) for line in lines)

    state.collections["docs"].shards[0].points.clear()
    code, lines = _job(env, "restore", result["backup"]["id"])
    assert code == 0 and lines[-1]["restored"] == ["docs"]
    assert len(state.all_points("docs")) == 8

    code, lines = _job(env, "list")
    assert [b["id"] for b in lines[-1]["backups"]] == [result["backup"]["id"]]


def test_a_missing_setting_is_named_and_exits_2(tmp_path: Path) -> None:
    code, lines = _job({"PATH": "/usr/bin:/bin"}, "list")
    assert code == 2
    assert lines[-1]["code"] == "invalid_settings"
    assert lines[-1]["message"] == (
        "BACKUP_QDRANT_URL: Field required; BACKUP_QDRANT_API_KEY_FILE: Field required; "
        "BACKUP_BUCKET: Field required; BACKUP_PREFIX: Field required"
    )


def test_an_unknown_backup_fails_with_exit_3(
    cluster: tuple[ClusterState, QdrantCluster], s3: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    _, qdrant = cluster
    code, lines = _job(_env(tmp_path, qdrant, s3_endpoint), "restore", "20260101T000000Z-abcdef")
    assert code == 3
    assert lines[-1] == {
        "event": "error",
        "code": "BackupError",
        "message": "backup '20260101T000000Z-abcdef' does not exist or is incomplete",
    }


@pytest.mark.parametrize("argv", [["drain"], ["restore"]])
def test_bad_arguments_exit_2(argv: list[str], tmp_path: Path) -> None:
    code, _ = _job({"PATH": "/usr/bin:/bin"}, *argv)
    assert code == 2


class _VaultStandIn:
    """Vault's Kubernetes login, an AWS-engine read and token revocation, on 127.0.0.1."""

    def __init__(self, *, refuse_login: bool = False) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.calls: list[tuple[str, str, dict[str, Any], str | None]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                stand_in.calls.append((self.command, self.path, body, self.headers.get("X-Vault-Token")))
                return dict(body)

            def do_POST(self) -> None:
                body = self._record()
                if self.path == "/v1/auth/kubernetes/login":
                    if refuse_login or body != {"role": "backup-dev-acme", "jwt": "projected-jwt"}:
                        self._answer(403, {"errors": ["permission denied"]})
                    else:
                        self._answer(200, {"auth": {"client_token": "hvs.login"}})
                else:
                    self._answer(204 if self.path == "/v1/auth/token/revoke-self" else 404, {})

            def do_GET(self) -> None:
                self._record()
                if (
                    self.path == "/v1/aws/sts/backup-dev-acme"
                    and self.headers.get("X-Vault-Token") == "hvs.login"
                ):
                    keys = {
                        "access_key": "ASIAVAULT",
                        "secret_key": "from-vault",
                        "security_token": "session",
                    }
                    self._answer(200, {"data": keys})
                else:
                    self._answer(403, {"errors": ["permission denied"]})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _vault_env(env: dict[str, str], vault: _VaultStandIn, tmp_path: Path) -> dict[str, str]:
    token = tmp_path / "vault-token"
    token.write_text("projected-jwt\n")
    without_keys = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    return {
        **without_keys,
        "HOME": str(tmp_path),  # no profile or credentials file: only what Vault hands out
        "BACKUP_VAULT_ADDRESS": vault.url,
        "BACKUP_VAULT_AUTH_PATH": "kubernetes",
        "BACKUP_VAULT_ROLE": "backup-dev-acme",
        "BACKUP_VAULT_CREDENTIALS_PATH": "aws/sts/backup-dev-acme",
        "BACKUP_VAULT_TOKEN_FILE": str(token),
    }


def test_in_the_cluster_the_job_takes_its_store_credentials_from_vault_and_prints_none(
    cluster: tuple[ClusterState, QdrantCluster], s3: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    state, qdrant = cluster
    for peer in sorted(state.peers)[1:]:
        state.peers.pop(peer)
    state.add_collection("docs", shards=1, replication_factor=1, points=4)
    vault = _VaultStandIn()
    try:
        env = _vault_env(_env(tmp_path, qdrant, s3_endpoint), vault, tmp_path)
        code, lines = _job(env, "backup")
    finally:
        vault.close()
    assert code == 0, lines
    assert [(method, path) for method, path, _, _ in vault.calls] == [
        ("POST", "/v1/auth/kubernetes/login"),
        ("GET", "/v1/aws/sts/backup-dev-acme"),
        ("POST", "/v1/auth/token/revoke-self"),  # the login token does not outlive the read
    ]
    printed = json.dumps(lines)
    assert all(secret not in printed for secret in ("from-vault", "session", "hvs.login", "projected-jwt"))
    # Without Vault's keys (no AWS_* variables, no profile) the same run has no credentials at all.
    no_vault = {k: v for k, v in env.items() if not k.startswith("BACKUP_VAULT_")}
    code, lines = _job(no_vault, "backup")
    assert code == 3 and lines[-1]["event"] == "error"


def test_a_refused_vault_login_fails_the_run_and_names_the_role(
    cluster: tuple[ClusterState, QdrantCluster], s3: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    _, qdrant = cluster
    vault = _VaultStandIn(refuse_login=True)
    try:
        code, lines = _job(_vault_env(_env(tmp_path, qdrant, s3_endpoint), vault, tmp_path), "backup")
    finally:
        vault.close()
    assert code == 3
    assert lines[-1]["code"] == "vault_credentials"
    assert "role backup-dev-acme" in lines[-1]["message"] and "HTTP 403" in lines[-1]["message"]
    assert "projected-jwt" not in json.dumps(lines)
