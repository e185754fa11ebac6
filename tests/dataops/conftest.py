"""Stand-ins for the restore drill: a multi-peer Qdrant and an S3 server (moto), both on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tenancy.automation.contract import StackRef
from tenancy.automation.data_operations import DataUnavailable, backup_prefix
from tenancy.dataops.object_store import BackupBucket
from tenancy.dataops.qdrant_api import QdrantCluster
from tests.dataops.qdrant_standin import API_KEY, ClusterState, qdrant_cluster
from tests.ports import free_port

BUCKET = "platform-backups"


@dataclass
class StandinData:
    """``TenantData`` for tests: each tenant's Qdrant is a stand-in cluster; buckets on moto."""

    clusters: dict[StackRef, str]
    s3: Any

    def qdrant(self, stack: StackRef) -> QdrantCluster:
        if stack not in self.clusters:
            raise DataUnavailable(f"{stack.name} has no Qdrant deployed")
        return QdrantCluster(url=self.clusters[stack], api_key=API_KEY, timeout=10, http_port=None)

    def bucket(self, stack: StackRef) -> BackupBucket:
        return BackupBucket(self.s3, bucket=BUCKET, prefix=backup_prefix(stack))


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()  # moto binds it itself: a port no client may take meanwhile (tests/ports.py)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if BUCKET in existing:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=BUCKET, Key=item["Key"])
    else:
        client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def bucket(s3: Any) -> BackupBucket:
    return BackupBucket(s3, bucket=BUCKET, prefix="tenants/prod/acme/qdrant")


@pytest.fixture
def cluster() -> Iterator[tuple[ClusterState, QdrantCluster]]:
    with qdrant_cluster(3) as (state, urls):
        first = next(iter(urls.values()))
        yield state, QdrantCluster(url=first, api_key=API_KEY, timeout=10, http_port=None)
