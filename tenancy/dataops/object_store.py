"""The tenant's backup prefix in the platform's S3-compatible object store.

Every key is under one prefix (``tenants/<env>/<tenant>/qdrant/``): the credentials the backup job
gets are scoped to that prefix, so nothing here may address a key outside it. Only the platform's
workers and API, whose credentials cover the bucket, take another prefix of it (``relocated``: the
backups a deleted tenant left, ``tenants/<env>/<tenant>/retired/``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any


class ObjectStoreError(RuntimeError):
    """The object store refused or failed a call; the message names the key."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


class BackupBucket:
    """A prefix of one bucket. ``client`` is a boto3 S3 client (or anything with its five calls)."""

    def __init__(self, client: Any, *, bucket: str, prefix: str) -> None:
        if not prefix or prefix.startswith("/") or ".." in prefix.split("/"):
            raise ValueError(f"backup prefix {prefix!r} must be a relative key prefix")
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/"

    def key(self, relative: str) -> str:
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ValueError(f"object name {relative!r} would leave the prefix")
        return self.prefix + relative

    def relocated(self, prefix: str) -> BackupBucket:
        """Another prefix of the same bucket through the same client (the workers' credentials)."""
        return BackupBucket(self._client, bucket=self.bucket, prefix=prefix)

    def copy_from(self, source: BackupBucket, relative: str) -> None:
        """Copy ``source``'s object ``relative`` to the same name here, inside the store (multipart
        beyond 5 GB); nothing passes through this process."""
        try:
            self._client.copy(
                {"Bucket": source.bucket, "Key": source.key(relative)}, self.bucket, self.key(relative)
            )
        except Exception as error:
            raise ObjectStoreError(
                f"copy of {source.key(relative)} to {self.key(relative)} failed: {_describe(error)}"
            ) from None

    def upload(self, relative: str, body: IO[bytes]) -> None:
        """Stream ``body`` (multipart for large files); an interrupted upload leaves no object."""
        try:
            self._client.upload_fileobj(body, self.bucket, self.key(relative))
        except Exception as error:  # boto3 raises many types; the key and the type are what a user needs
            raise ObjectStoreError(f"upload of {self.key(relative)} failed: {_describe(error)}") from None

    def put_bytes(self, relative: str, data: bytes, *, content_type: str) -> None:
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self.key(relative), Body=data, ContentType=content_type
            )
        except Exception as error:
            raise ObjectStoreError(f"write of {self.key(relative)} failed: {_describe(error)}") from None

    def read_bytes(self, relative: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self.key(relative))
            return bytes(response["Body"].read())
        except Exception as error:
            raise ObjectStoreError(f"read of {self.key(relative)} failed: {_describe(error)}") from None

    def stream(self, relative: str) -> Iterator[bytes]:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self.key(relative))
            yield from response["Body"].iter_chunks(1 << 20)
        except Exception as error:
            raise ObjectStoreError(f"read of {self.key(relative)} failed: {_describe(error)}") from None

    def objects(self, relative_prefix: str = "") -> list[StoredObject]:
        found: list[StoredObject] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key(relative_prefix) if relative_prefix else self.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    found.append(StoredObject(item["Key"][len(self.prefix) :], int(item["Size"])))
        except Exception as error:
            raise ObjectStoreError(f"listing {self.prefix} failed: {_describe(error)}") from None
        return found

    def folders(self) -> list[str]:
        """The names of the folders directly under this prefix (``<name>/…``), one listing call a page."""
        found: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
            )
            for page in pages:
                for item in page.get("CommonPrefixes", []):
                    found.append(item["Prefix"][len(self.prefix) :].rstrip("/"))
        except Exception as error:
            raise ObjectStoreError(f"listing {self.prefix} failed: {_describe(error)}") from None
        return found

    def delete(self, relatives: list[str]) -> None:
        for start in range(0, len(relatives), 1000):
            chunk = relatives[start : start + 1000]
            try:
                self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.key(r)} for r in chunk], "Quiet": True},
                )
            except Exception as error:
                raise ObjectStoreError(f"deleting under {self.prefix} failed: {_describe(error)}") from None


def _describe(error: Exception) -> str:
    # botocore's ClientError carries the service's code; never the request's credentials.
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return f"{type(error).__name__} {code}"
    return type(error).__name__
