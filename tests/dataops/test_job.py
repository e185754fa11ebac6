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
