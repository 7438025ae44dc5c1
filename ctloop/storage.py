"""Listing and reading data files on a local path, gs:// (google-cloud-storage) or s3:// (boto3).

S3-compatible stores (MinIO, KFP's SeaweedFS) are reached through boto3's own configuration:
``AWS_ENDPOINT_URL`` / ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, as KServe and KFP do.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from ctloop.errors import DataError

REMOTE_SCHEMES = ("gs://", "s3://")


@dataclasses.dataclass(frozen=True)
class StoredFile:
    """A file somewhere: its URI and its size in bytes."""

    uri: str
    size: int


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def list_files(uri: str) -> list[StoredFile]:
    """Every file under ``uri`` (or ``uri`` itself if it is a file), sorted by URI."""
    if not is_remote(uri):
        path = Path(uri)
        if path.is_file():
            return [StoredFile(str(path), path.stat().st_size)]
        if not path.is_dir():
            raise DataError(f"data path {uri} does not exist; pass an existing file or folder")
        return sorted(
            (StoredFile(str(p), p.stat().st_size) for p in path.rglob("*") if p.is_file()),
            key=lambda f: f.uri,
        )
    bucket, prefix = _split(uri)
    if uri.startswith("gs://"):
        from google.cloud import storage

        blobs = storage.Client().list_blobs(bucket, prefix=prefix)
        found = [StoredFile(f"gs://{bucket}/{b.name}", b.size) for b in blobs]
    else:
        import boto3

        pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        )
        found = [
            StoredFile(f"s3://{bucket}/{o['Key']}", o["Size"])
            for page in pages
            for o in page.get("Contents", [])
        ]
    # A prefix "data/span-1" must not match "data/span-10/...": keep the exact object or children.
    return sorted(
        (f for f in found if f.uri == uri or f.uri.startswith(uri.rstrip("/") + "/")),
        key=lambda f: f.uri,
    )


def fetch(uri: str, workdir: str | None = None) -> Path:
    """A local path holding the bytes of ``uri`` (the path itself when local)."""
    if not is_remote(uri):
        return Path(uri)
    target = Path(workdir or tempfile.mkdtemp(prefix="ctloop-")) / uri.split("://", 1)[1]
    target.parent.mkdir(parents=True, exist_ok=True)
    bucket, key = _split(uri)
    if uri.startswith("gs://"):
        from google.cloud import storage

        storage.Client().bucket(bucket).blob(key).download_to_filename(str(target))
    else:
        import boto3

        boto3.client("s3").download_file(bucket, key, str(target))
    return target


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    if not bucket:
        raise DataError(f"data URI {uri} has no bucket; use gs://BUCKET/PATH or s3://BUCKET/PATH")
    return bucket, key
