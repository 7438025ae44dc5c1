"""The data files ingest reads: checked against select_span's fingerprint, then read where they
are (local) or from a copy made by the read that checked them (remote)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from ctloop.data import storage
from ctloop.errors import ConfigError, DataChangedError


@dataclasses.dataclass(frozen=True)
class Source:
    """A data file and the local file its rows are read from (itself, or a copy of a remote
    one); ``stat`` is the local file's when it was hashed (None for a copy: it cannot change)."""

    uri: str
    path: str
    stat: tuple[int, int, int] | None

    def check_unchanged(self) -> None:
        """Raises DataChangedError if the file changed since it was hashed."""
        if self.stat is None:
            return
        try:
            now = _stat(os.stat(self.path))
        except FileNotFoundError:
            now = None
        if now != self.stat:
            raise DataChangedError(
                f"data file {self.uri} changed while ingest read it: the data changed while the "
                "run started; rerun the pipeline"
            )


def open_files(files: list[str], fingerprint: str, spool: str,
               s3_endpoint_url: str | None = None) -> list[Source]:
    """Checks the files are the bytes select_span described; returns where to read their rows.

    Each file is read once for its description (its SHA-256, or the store's ETag or hashes from
    the same response): if their fingerprint is not ``fingerprint``, a file changed or went away
    since select_span listed it, the rows would not be the data the run (and KFP's cache key)
    says they are, and the run stops here. A remote file is copied into ``spool`` by that same
    read (one file in memory at a time); a local one is read in place, and checked unchanged
    after each pass over its rows (``Source.check_unchanged``).
    """
    if not files:
        raise ConfigError("files is empty; pass select_span's files output")
    sources, described = [], []
    for i, uri in enumerate(files):
        try:
            if storage.is_remote(uri):
                content, stored = storage.read(uri, s3_endpoint_url)
                path = Path(spool) / f"{i:05d}-{Path(uri).name}"
                path.write_bytes(content)
                del content
                sources.append(Source(uri, str(path), None))
            else:
                stored, stat = _hash_local(uri)
                sources.append(Source(uri, uri, stat))
        except FileNotFoundError as exc:
            raise DataChangedError(
                f"data file {uri} is gone since select_span listed it: the data changed while "
                "the run started; rerun the pipeline"
            ) from exc
        described.append(stored)
    # Checked before parsing, so a file rewritten in between fails as changed, not as unreadable.
    read = storage.fingerprint(described)
    if read != fingerprint:
        raise DataChangedError(
            f"data files changed since select_span fingerprinted them (fingerprint "
            f"{fingerprint[:12]} selected, {read[:12]} read): the data changed while the run "
            "started; rerun the pipeline"
        )
    return sources


def _hash_local(uri: str) -> tuple[storage.StoredFile, tuple[int, int, int]]:
    """The description ``storage.read`` gives of a local file, read in chunks, and its stat."""
    digest, size = hashlib.sha256(), 0
    with open(uri, "rb") as f:
        before = _stat(os.fstat(f.fileno()))
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return storage.StoredFile(uri, size, f"sha256:{digest.hexdigest()}"), before


def _stat(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
