"""The model server's request sink: what each sampled request sent and got, as JSON Lines.

Cheap on the hot path: a request costs one random draw and one ``put_nowait`` of references to
arrays the server built anyway; converting them to JSON and writing happen on a background
thread. The queue is bounded: when the writer falls behind, a record is dropped and counted,
never waited for, so recording cannot slow a request down or hold its memory without bound.

Why this sink rather than KServe's request logger: KServe's logger (``spec.predictor.logger``)
is a sidecar that posts a CloudEvent per request to a URL, which takes a Knative/eventing broker
or a service on a cluster to receive and store them, and it sends the raw bodies, one HTTP call
per request. This sink writes the checked model inputs (as the model saw them, missing values as
null), the answers, the version and the latency in files a plain process can read, locally and
on a cluster alike: with ``s3://BUCKET/PREFIX`` as the directory, each closed file is uploaded
with one PUT (``ctloop.serving.record_sink``), from the same background thread.

Layout of a record directory::

    requests-<UTC time>-<pid>-<n>.jsonl  one JSON object per sampled request (``Record``);
                                         a new file every ``rotate_rows`` rows or ``rotate_s``
    labels-*.jsonl                       label feedback (``ctloop feedback``), joined by id

On an object store the request files are named ``requests-<UTC time>-<pid>-<n>-<host>.jsonl``.

Standard library and numpy only: the serving environment imports it, and so do tests.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import queue
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctloop.errors import ConfigError
from ctloop.serving import record_sink
from ctloop.serving.defaults import (
    DEFAULT_RECORD_SAMPLE_RATE,
    DEFAULT_ROTATE_ROWS,
    DEFAULT_ROTATE_S,
)

logger = logging.getLogger(__name__)

RECORDS_GLOB = "requests-*.jsonl"
LABELS_GLOB = "labels-*.jsonl"
DEFAULT_QUEUE = 10_000
# How long the writer waits for more records before it flushes what it has: what a reader of the
# files (ctloop monitor) sees lags the requests by about this much.
FLUSH_S = 0.5


class Recorder:
    """Appends sampled requests to JSON Lines files from a background thread.

    Args:
        directory: Where the files go (created), or ``s3://BUCKET/PREFIX``: the files are
            written to a local spool folder and each is uploaded once closed (rotated, or at
            ``close``).
        sample_rate: The share of requests recorded, in (0, 1].
        max_queue: The most requests waiting to be written; more are dropped and counted.
        rotate_rows: Start a new file after this many rows.
        rotate_s: Start a new file after this many seconds.
        seed: Seed of the sampling draw (None: from the OS).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` directory (None: boto3's
            default).
    """

    def __init__(self, directory: str | os.PathLike[str],
                 sample_rate: float = DEFAULT_RECORD_SAMPLE_RATE,
                 max_queue: int = DEFAULT_QUEUE, rotate_rows: int = DEFAULT_ROTATE_ROWS,
                 rotate_s: float = DEFAULT_ROTATE_S, seed: int | None = None,
                 s3_endpoint_url: str | None = None):
        if not 0.0 < sample_rate <= 1.0:  # NaN fails too
            raise ConfigError(f"record sample rate {sample_rate} is out of range: use a share "
                              "of requests in (0, 1], e.g. 0.1")
        if max_queue < 1 or rotate_rows < 1 or not rotate_s > 0:
            raise ConfigError(f"record queue {max_queue}, rotation {rotate_rows} rows / "
                              f"{rotate_s} s: use positive values")
        self.sink = None
        if record_sink.is_object_store(str(directory)):
            self.sink = record_sink.S3Sink(str(directory), s3_endpoint_url)
            directory = tempfile.mkdtemp(prefix="ctloop-records-")
        elif s3_endpoint_url:
            raise ConfigError(f"an S3 endpoint is given but the record directory {directory} is "
                              "not s3://; pass s3://BUCKET/PREFIX or leave the endpoint out")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.where = self.sink.uri if self.sink else str(self.directory)
        self._unsent: list[Path] = []  # closed files whose upload failed (retried)
        self.sample_rate = sample_rate
        self.rotate_rows, self.rotate_s = rotate_rows, rotate_s
        self.written = 0  # requests written (by the writer thread)
        self._full = 0  # requests dropped because the queue was full (by the event loop)
        self._failed = 0  # requests dropped because a write failed (by the writer thread)
        self._queue: queue.Queue = queue.Queue(max_queue)
        self._draw = random.Random(seed)
        self._files = 0
        self._handle = None
        self._path: Path | None = None
        self._rows_in_file = 0
        self._opened = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="request-recorder", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Requests not recorded: the queue was full, or their write failed."""
        return self._full + self._failed

    def sampled(self) -> bool:
        """Whether the next request is recorded."""
        return self.sample_rate >= 1.0 or self._draw.random() < self.sample_rate

    def record(self, request_id: str, version: str | None, latency_ms: float,
               columns: dict[str, np.ndarray], answers: np.ndarray) -> bool:
        """Queues one request (never blocks); returns False if it was dropped.

        ``columns`` and ``answers`` are kept by reference: the caller must not change them.
        """
        item = (time.time(), request_id, version, latency_ms, columns, answers)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._full += 1
            return False
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Writes what is queued and closes the file."""
        self._stop.set()
        self._thread.join(timeout_s)

    def _drain(self) -> None:
        while True:
            try:
                items = [self._queue.get(timeout=FLUSH_S)]
            except queue.Empty:
                if self._stop.is_set():
                    break
                self._maybe_rotate()
                continue
            while True:  # everything queued meanwhile, in one write
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(items)
            except OSError as exc:
                # A full or unwritable disk loses records, not requests; say so on every batch.
                self._failed += len(items)
                logger.error("request records not written to %s: %s", self.directory, exc)
        if self._handle:
            self._close_file()

    def _write(self, items: list) -> None:
        lines = []
        for stamp, request_id, version, latency_ms, columns, answers in items:
            lines.append(json.dumps({
                "id": request_id,
                "time": round(stamp, 3),
                "version": version,
                "latency_ms": round(latency_ms, 3),
                "inputs": {name: _plain(values) for name, values in columns.items()},
                "outputs": _plain(answers),
            }, separators=(",", ":"), allow_nan=False))
        self._maybe_rotate()
        if self._handle is None:
            self._open()
        self._handle.write("\n".join(lines) + "\n")
        self._handle.flush()
        self._rows_in_file += sum(len(answers) for *_, answers in items)
        self.written += len(items)

    def _open(self) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        self._files += 1
        path = self.directory / f"requests-{stamp}-{os.getpid()}-{self._files:05d}.jsonl"
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across writes
        self._path = path
        self._rows_in_file, self._opened = 0, time.monotonic()

    def _maybe_rotate(self) -> None:
        if self._handle and (self._rows_in_file >= self.rotate_rows
                             or time.monotonic() - self._opened >= self.rotate_s):
            self._close_file()

    def _close_file(self) -> None:
        """Closes the current file; with a sink, uploads it (and any earlier failed one)."""
        self._handle.close()
        self._handle = None
        if self.sink is not None:
            self._unsent.append(self._path)
            self._unsent = [path for path in self._unsent if not self.sink.upload(path)]


def _plain(values: np.ndarray) -> list[Any]:
    """A column or the answers as JSON values: NaN and "" (the server's missing values) as
    null, bytes as text."""
    if values.dtype.kind == "f":
        return [None if math.isnan(v) else v for v in values.tolist()] if values.ndim == 1 else [
            _plain(row) for row in values]
    return [None if v in ("", b"") else (v.decode("utf-8", "replace") if isinstance(v, bytes)
                                         else v) for v in values.tolist()]
