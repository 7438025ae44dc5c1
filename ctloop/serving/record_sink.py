"""Where the recorder's closed files go when the record directory is an object store.

``ctloop serve --record-dir s3://BUCKET/PREFIX`` (a KServe pod on a cluster): the recorder writes
its JSON Lines files to a local spool folder as it does locally, and each file, once rotated
(``--record-rotate-rows`` / ``--record-rotate-minutes``) or at shutdown, is uploaded with one PUT
to ``s3://BUCKET/PREFIX/<file name>`` and removed from the spool. The upload runs on the
recorder's writer thread, so a request never waits for it. A failed upload keeps the file in the
spool and is tried again at the next rotation; the records are lost only if the pod goes away
before an upload succeeds.

An object appears whole (one PUT), so ``ctloop monitor --records s3://...`` never reads half a
file; it sees a file's rows once the file is rotated, so on an object store the monitor lags the
requests by up to the rotation time (10 minutes by default).

Object names: the local name with the host (the pod's name) before ``.jsonl``, so replicas of one
predictor, which may share a process id, never overwrite each other's files.
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path

from ctloop.errors import ConfigError

logger = logging.getLogger(__name__)

SCHEME = "s3://"


def is_object_store(uri: str | None) -> bool:
    return str(uri or "").startswith(SCHEME)


def split(uri: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> (bucket, prefix without a trailing slash)."""
    bucket, _, prefix = uri[len(SCHEME):].partition("/")
    if not bucket:
        raise ConfigError(f"record location {uri!r} has no bucket; use s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


def host_tag() -> str:
    """The host name reduced to characters safe in an object name."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63] or "host"


class S3Sink:
    """Uploads closed record files to ``s3://BUCKET/PREFIX``, one PUT per file.

    Args:
        uri: ``s3://BUCKET/PREFIX``.
        s3_endpoint_url: An S3-compatible endpoint (MinIO, SeaweedFS); None: boto3's default.
            Credentials come from boto3's standard chain only.
    """

    def __init__(self, uri: str, s3_endpoint_url: str | None = None):
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = split(uri)
        self.s3_endpoint_url = s3_endpoint_url
        self._client = None
        self._host = host_tag()

    def key(self, path: Path) -> str:
        name = f"{path.stem}-{self._host}{path.suffix}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def upload(self, path: Path) -> bool:
        """PUTs one closed file and removes it from the spool; False (file kept) on failure."""
        try:
            if self._client is None:
                from ctloop.data.storage import s3_client

                self._client = s3_client(self.s3_endpoint_url)
            self._client.put_object(Bucket=self.bucket, Key=self.key(path),
                                    Body=path.read_bytes(), ContentType="application/x-ndjson")
        except Exception as exc:  # noqa: BLE001 - botocore raises many kinds; all mean "retry"
            logger.error("request records %s not uploaded to %s (kept, retried at the next "
                         "rotation): %s", path.name, self.uri, str(exc).splitlines()[0:1])
            return False
        path.unlink(missing_ok=True)
        return True
