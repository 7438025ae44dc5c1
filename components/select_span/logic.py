"""select_span: which data files a run reads (span/version patterns, a rolling range of spans),
and their fingerprint.

Cheap on purpose: no pandas or TensorFlow import, and remote files are described by the hashes
their store keeps, not downloaded. It runs uncached on every pipeline run; its fingerprint is an
input of ingest, so ingest's KFP cache key changes exactly when the data does.

No kfp import: called in-process by tests and by the KFP wrapper. The span rules themselves are
``ctloop.data.spans``, which ``ctloop run``'s preflight uses too.
"""

from __future__ import annotations

import dataclasses

from ctloop.data import storage
from ctloop.data.spans import Selection, resolve

__all__ = ["SelectResult", "Selection", "resolve", "run"]


@dataclasses.dataclass(frozen=True)
class SelectResult:
    span: int
    spans: list[int]
    files: list[str]
    fingerprint: str


def run(data_uri: str, spans: int = 1, s3_endpoint_url: str | None = None) -> SelectResult:
    """Resolves the files to read (see :func:`resolve`) and fingerprints them.

    The fingerprint is a SHA-256 over each file's URI, size and content hash (local: SHA-256 of
    the bytes; gs://: the object's MD5/CRC32C; s3://: its ETag), so it changes when any byte of
    the input changes, and stays the same on a rerun over the same data.
    """
    selection = resolve(data_uri, spans, s3_endpoint_url)
    files = storage.hashed(selection.files)
    return SelectResult(
        span=selection.span,
        spans=selection.spans,
        files=[f.uri for f in files],
        fingerprint=storage.fingerprint(files),
    )
