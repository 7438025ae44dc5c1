"""Spans: which data files a run reads, from a pattern with ``{SPAN}`` / ``{VERSION}``
placeholders and globs, a file, a folder of files or a folder of ``span-<N>/`` folders.

Cheap on purpose: no pandas or TensorFlow import, and nothing is read, only listed. Used by the
select_span component and by ``ctloop run``'s preflight, so both resolve the same files.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import PurePosixPath

from ctloop.data import storage
from ctloop.errors import ConfigError, DataError

SPAN, VERSION = "{SPAN}", "{VERSION}"
SUPPORTED_SUFFIXES = (".csv", ".parquet")
_TOKENS = re.compile(r"(\{SPAN\}|\{VERSION\}|\*)")
_PLACEHOLDER = re.compile(r"\{[A-Za-z_]+\}")
_SPAN_FOLDER = re.compile(r"(?:^|/)span-(\d+)(?=/|$)")


@dataclasses.dataclass(frozen=True)
class Selection:
    """The data files of the spans chosen, oldest span first, each span's files by URI."""

    spans: list[int]
    files: list[storage.StoredFile]

    @property
    def span(self) -> int:
        """The latest span read: the run's span."""
        return self.spans[-1]


def resolve(data_uri: str, spans: int = 1, s3_endpoint_url: str | None = None) -> Selection:
    """The files of the last ``spans`` spans under ``data_uri``, listed but not read.

    ``data_uri`` is either a pattern or a plain path:

    - a pattern has ``{SPAN}`` (and optionally ``{VERSION}``) placeholders, which match digits,
      and ``*`` globs, which match within one path segment, e.g. ``data/span-{SPAN}/*.csv`` or
      ``s3://bucket/exports/span-{SPAN}/v{VERSION}/part-*.parquet``. A pattern may also name
      folders (``data/span-{SPAN}``): every file under a match counts.
    - a plain path is a file, a folder of files, or a folder of ``span-<N>/`` folders; a file's
      span is its path's last ``span-<N>`` segment, 0 if none.

    Spans compare as numbers (10 is after 9); within a span only the highest version is read.
    Only ``.csv`` and ``.parquet`` files are data. Fewer spans than ``spans`` present: all of
    them are read (the list of spans read says so).

    Args:
        data_uri: The pattern or path; local, gs:// or s3://.
        spans: How many of the latest spans to read (a rolling range).
        s3_endpoint_url: An S3-compatible endpoint (MinIO, SeaweedFS); None: boto3's default.
    """
    if spans < 1:
        raise ConfigError(f"spans {spans} is invalid: read at least 1 span")
    uri = _normalize(data_uri)
    folder, pattern = _compile(uri)
    candidates = []
    for stored in storage.list_files(folder, s3_endpoint_url):
        match = pattern.fullmatch(stored.uri)
        if match and stored.uri.endswith(SUPPORTED_SUFFIXES):
            span = int(match["span"]) if "span" in pattern.groupindex else _span_folder(stored.uri)
            version = int(match["version"]) if "version" in pattern.groupindex else 0
            candidates.append((span, version, stored))
    if not candidates:
        if _TOKENS.search(uri):
            raise DataError(
                f"data_uri {data_uri} matches no .csv or .parquet file under {folder}; fix the "
                f"pattern ({SPAN} and {VERSION} match digits, * matches within one path segment)"
            )
        raise DataError(
            f"data path {data_uri} has no .csv or .parquet files; point --data at a data file "
            "or a folder of them"
        )
    latest_version: dict[int, int] = {}
    for span, version, _ in candidates:
        latest_version[span] = max(version, latest_version.get(span, version))
    chosen = sorted(latest_version)[-spans:]
    files = [
        stored
        for span, version, stored in sorted(candidates, key=lambda c: (c[0], c[2].uri))
        if span in chosen and version == latest_version[span]
    ]
    return Selection(chosen, files)


def _normalize(data_uri: str) -> str:
    if storage.is_remote(data_uri):
        return data_uri.rstrip("/")
    # The form local listings use (no "./", "//" or trailing "/"), so patterns match them.
    return str(PurePosixPath(data_uri))


def _compile(uri: str) -> tuple[str, re.Pattern]:
    """The folder to list, and the regular expression a data file's URI must fully match."""
    for placeholder in _PLACEHOLDER.findall(uri):
        if placeholder not in (SPAN, VERSION):
            raise ConfigError(
                f"data_uri {uri} has an unknown placeholder {placeholder}; use {SPAN} and "
                f"optionally {VERSION}"
            )
    for placeholder in (SPAN, VERSION):
        if uri.count(placeholder) > 1:
            raise ConfigError(f"data_uri {uri} has {placeholder} more than once; use it once")
    if VERSION in uri and SPAN not in uri:
        raise ConfigError(f"data_uri {uri} has {VERSION} without {SPAN}; add {SPAN}")
    first = _TOKENS.search(uri)
    if first is None:
        folder = uri
    else:
        if storage.is_remote(uri):
            bucket_end = uri.find("/", len("s3://"))
            if bucket_end == -1 or first.start() < bucket_end:
                raise ConfigError(
                    f"data_uri {uri} has a placeholder or * in the bucket name; put them in the "
                    "path, e.g. s3://BUCKET/span-{SPAN}/*.csv"
                )
        static = uri[: first.start()]
        folder = static.rpartition("/")[0] or ("/" if static.startswith("/") else ".")
    parts = []
    for token in _TOKENS.split(uri):
        if token == SPAN:
            parts.append(r"(?P<span>\d+)")
        elif token == VERSION:
            parts.append(r"(?P<version>\d+)")
        elif token == "*":
            parts.append(r"[^/]*")
        else:
            parts.append(re.escape(token))
    # A match may name a file or a folder: every file under a matching folder counts.
    return folder, re.compile("".join(parts) + r"(?:/.+)?")


def _span_folder(uri: str) -> int:
    found = _SPAN_FOLDER.findall(uri)
    return int(found[-1]) if found else 0
