"""The places a monitor reads and writes: a local folder, or ``s3://BUCKET/PREFIX`` (boto3).

Record files are listed by name pattern (``requests-*.jsonl``, ``labels-*.jsonl``) directly
under the location, with their last-modified time, so a reader reads only the newest files a
window needs; text is written whole (a local rename, or one PUT), so a reader never sees half of
it. Credentials come only from boto3's standard chain.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from pathlib import Path

from ctloop.errors import DataError
from ctloop.serving.record_sink import is_object_store, split


@dataclasses.dataclass(frozen=True)
class Stored:
    """A record file: where it is, and when it was last written (seconds since the epoch)."""

    uri: str
    mtime: float


def join(location: str | os.PathLike[str], *names: str) -> str:
    """``location/name/...`` for a folder or an ``s3://`` prefix."""
    if is_object_store(str(location)):
        return "/".join([str(location).rstrip("/"), *names])
    return str(Path(location, *names))


def exists(location: str | os.PathLike[str], s3_endpoint_url: str | None = None) -> bool:
    """Whether a record location exists (an ``s3://`` prefix: whether its bucket answers)."""
    if not is_object_store(str(location)):
        return Path(location).is_dir()
    bucket, _ = split(str(location))
    try:
        _client(s3_endpoint_url).head_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - botocore raises many kinds
        raise DataError(f"cannot reach {location} ({_first_line(exc)}); check the bucket, the "
                        "credentials (boto3's standard chain) and the S3 endpoint") from exc
    return True


def list_files(location: str | os.PathLike[str], pattern: str,
               s3_endpoint_url: str | None = None) -> list[Stored]:
    """The files directly under ``location`` whose name matches ``pattern``, newest first."""
    if not is_object_store(str(location)):
        found = [Stored(str(p), p.stat().st_mtime) for p in Path(location).glob(pattern)]
    else:
        bucket, prefix = split(str(location))
        start = f"{prefix}/" if prefix else ""
        found = []
        try:
            pages = _client(s3_endpoint_url).get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=start, Delimiter="/")
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(start):]
                    if fnmatch.fnmatchcase(name, pattern):
                        # Stores keep whole seconds: the next one is the latest it could be.
                        found.append(Stored(f"s3://{bucket}/{item['Key']}",
                                            item["LastModified"].timestamp() + 1.0))
        except Exception as exc:  # noqa: BLE001 - botocore raises many kinds
            raise DataError(f"cannot list {location} ({_first_line(exc)}); check the bucket, "
                            "the credentials and the S3 endpoint") from exc
    return sorted(found, key=lambda f: (f.mtime, f.uri), reverse=True)


def read_text(uri: str, s3_endpoint_url: str | None = None) -> str | None:
    """The text of a file or object; None when there is none."""
    if not is_object_store(uri):
        path = Path(uri)
        return path.read_text(encoding="utf-8") if path.exists() else None
    bucket, key = split(uri)
    client = _client(s3_endpoint_url)
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
    except client.exceptions.NoSuchKey:
        return None
    except Exception as exc:  # noqa: BLE001 - botocore raises many kinds
        raise DataError(f"cannot read {uri} ({_first_line(exc)}); check the credentials and "
                        "the S3 endpoint") from exc


def write_text(uri: str, text: str, s3_endpoint_url: str | None = None) -> None:
    """Writes a file by rename, or an object with one PUT: a reader never sees half of it."""
    if not is_object_store(uri):
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return
    bucket, key = split(uri)
    try:
        _client(s3_endpoint_url).put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - botocore raises many kinds
        raise DataError(f"cannot write {uri} ({_first_line(exc)}); check the credentials and "
                        "the S3 endpoint") from exc


_CLIENTS: dict[tuple, object] = {}


def _client(s3_endpoint_url: str | None):
    # One client per endpoint and identity for the process: a monitor run reads many objects.
    key = (s3_endpoint_url, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_PROFILE"))
    if key not in _CLIENTS:
        from ctloop.data.storage import s3_client

        _CLIENTS[key] = s3_client(s3_endpoint_url)
    return _CLIENTS[key]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
