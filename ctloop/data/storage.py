"""Listing and reading data files on a local path, gs:// (google-cloud-storage) or s3:// (boto3).

Credentials come only from each client's standard chain (boto3: ``AWS_*`` environment variables,
shared config files, instance or pod roles; google-cloud-storage: Application Default
Credentials), never from ctloop's parameters, so ctloop never sees, logs or records them. An
S3-compatible store (MinIO, KFP's SeaweedFS) is reached by passing its endpoint URL
(``s3_endpoint_url``); without one, boto3's own configuration applies (``AWS_ENDPOINT_URL``
included).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from pathlib import Path

from ctloop.errors import DataError

REMOTE_SCHEMES = ("gs://", "s3://")
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class StoredFile:
    """A file somewhere: its URI, its size in bytes, and a hash of its content.

    ``content_hash`` is ``sha256:<hex>`` of the bytes for a local file, and for a remote one what
    the store vouches for without a download: ``md5:<b64>,crc32c:<b64>`` for gs:// (composite
    objects have no MD5), ``etag:<etag>`` for s3://. It is empty for a local file that has only
    been listed (see :func:`hashed`).
    """

    uri: str
    size: int
    content_hash: str = ""


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def list_files(uri: str, s3_endpoint_url: str | None = None) -> list[StoredFile]:
    """Every file under ``uri`` (or ``uri`` itself if it is a file), sorted by URI.

    Remote files come with their content hash from the listing itself; local ones without.
    """
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
        from google.api_core import exceptions
        from google.auth.exceptions import GoogleAuthError

        try:
            found = [
                StoredFile(f"gs://{bucket}/{b.name}", b.size, _gcs_hash(b.md5_hash, b.crc32c))
                for b in _gcs_client().list_blobs(bucket, prefix=prefix)
            ]
        except (exceptions.GoogleAPIError, GoogleAuthError) as exc:
            raise DataError(
                f"cannot list {uri} ({_first_line(exc)}); check the bucket and the credentials "
                "(Application Default Credentials)"
            ) from exc
    else:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = s3_client(s3_endpoint_url).get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            found = [
                StoredFile(f"s3://{bucket}/{o['Key']}", o["Size"], _s3_hash(o["ETag"]))
                for page in pages
                for o in page.get("Contents", [])
            ]
        except (BotoCoreError, ClientError) as exc:
            raise DataError(
                f"cannot list {uri} ({_first_line(exc)}); check the bucket, the credentials "
                f"(boto3's standard chain) and s3_endpoint_url ({s3_endpoint_url or 'default'})"
            ) from exc
    # A prefix "data/span-1" must not match "data/span-10/...": keep the exact object or children.
    return sorted(
        (f for f in found if f.uri == uri or f.uri.startswith(uri.rstrip("/") + "/")),
        key=lambda f: f.uri,
    )


def hashed(files: Iterable[StoredFile]) -> list[StoredFile]:
    """The files with their content hash: local files are hashed here, remote ones already are."""
    result = []
    for stored in files:
        if not stored.content_hash:
            digest, size = hashlib.sha256(), 0
            with open(stored.uri, "rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            # The size of the bytes hashed, not the listing's: the two describe one read.
            stored = StoredFile(stored.uri, size, f"sha256:{digest.hexdigest()}")
        result.append(stored)
    return result


def read(uri: str, s3_endpoint_url: str | None = None) -> tuple[bytes, StoredFile]:
    """The bytes of ``uri`` and a description of exactly those bytes.

    The description comes from the same read as the bytes (their SHA-256, or the response's
    ETag or hashes), so comparing it with a listing's tells whether the file changed in between.

    Raises:
        FileNotFoundError: The file is gone.
        DataError: The store refused or failed the read.
    """
    if not is_remote(uri):
        content = Path(uri).read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        return content, StoredFile(uri, len(content), f"sha256:{digest}")
    bucket, key = _split(uri)
    if uri.startswith("gs://"):
        from google.api_core import exceptions
        from google.auth.exceptions import GoogleAuthError

        try:
            blob = _gcs_client().bucket(bucket).blob(key)
            # One request; the client checks the bytes against the response's MD5 and fills
            # md5_hash/crc32c from that same response.
            content = blob.download_as_bytes()
        except exceptions.NotFound as exc:
            raise FileNotFoundError(uri) from exc
        except (exceptions.GoogleAPIError, GoogleAuthError) as exc:
            raise DataError(
                f"cannot read {uri} ({_first_line(exc)}); check the credentials "
                "(Application Default Credentials)"
            ) from exc
        return content, StoredFile(uri, len(content), _gcs_hash(blob.md5_hash, blob.crc32c))
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        # One GET, not boto3's download_file: its ranged parts could straddle a change.
        response = s3_client(s3_endpoint_url).get_object(Bucket=bucket, Key=key)
        content = response["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise FileNotFoundError(uri) from exc
        raise DataError(
            f"cannot read {uri} ({_first_line(exc)}); check the credentials (boto3's standard "
            f"chain) and s3_endpoint_url ({s3_endpoint_url or 'default'})"
        ) from exc
    except BotoCoreError as exc:
        raise DataError(
            f"cannot read {uri} ({_first_line(exc)}); check s3_endpoint_url "
            f"({s3_endpoint_url or 'default'})"
        ) from exc
    return content, StoredFile(uri, len(content), _s3_hash(response["ETag"]))


def fingerprint(files: Iterable[StoredFile]) -> str:
    """SHA-256 over each file's URI, size and content hash, in the order given."""
    digest = hashlib.sha256()
    for stored in files:
        digest.update(f"{stored.uri}\0{stored.size}\0{stored.content_hash}\n".encode())
    return digest.hexdigest()


def _gcs_client():
    from google.cloud import storage

    return storage.Client()


def s3_client(endpoint_url: str | None):
    """A boto3 S3 client on ``endpoint_url`` (None: boto3's own configuration)."""
    import boto3
    from botocore.config import Config

    # S3-compatible stores (MinIO, SeaweedFS) answer path-style requests; virtual-hosted ones
    # would need a DNS name per bucket under the endpoint's host.
    config = Config(s3={"addressing_style": "path"}) if endpoint_url else None
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _gcs_hash(md5: str | None, crc32c: str | None) -> str:
    return ",".join(f"{name}:{value}" for name, value in (("md5", md5), ("crc32c", crc32c))
                    if value)


def _s3_hash(etag: str) -> str:
    # Listings and GETs both quote the ETag; compare the value.
    return "etag:" + etag.strip('"')


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    if not bucket:
        raise DataError(f"data URI {uri} has no bucket; use gs://BUCKET/PATH or s3://BUCKET/PATH")
    return bucket, key
