"""The served records a monitor run reads (``ctloop serve --record-dir``'s JSON Lines), the labels
that came back for them (``ctloop feedback``), and the windows compared. The record location is a
folder or ``s3://BUCKET/PREFIX`` (``ctloop.monitor.store``)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
from typing import Any

import numpy as np
import pandas as pd

from ctloop.errors import ConfigError, DataError
from ctloop.monitor import store
from ctloop.serving.recorder import LABELS_GLOB, RECORDS_GLOB

PREDICTION = "prediction"  # the prediction's name among the measured features
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
ID, ROW, TIME, VERSION, LATENCY, LABEL = "id", "row", "time", "version", "latency_ms", "label"


@dataclasses.dataclass(frozen=True)
class Window:
    """Which served rows a monitor run compares: the latest ``rows`` rows, or the rows of the
    latest ``seconds`` (ending at the latest record); the previous window is as long, before."""

    rows: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"2000"`` (rows) or ``"30m"``, ``"6h"``, ``"1d"``, ``"90s"`` (a duration)."""
        text = text.strip()
        if text.isdigit() and int(text) > 0:
            return cls(rows=int(text))
        if match := _DURATION.match(text):
            seconds = float(match.group(1)) * _SECONDS[match.group(2)]
            if seconds > 0:
                return cls(seconds=seconds)
        raise ConfigError(f"window {text!r} is neither a row count nor a duration; pass e.g. "
                          "2000 (rows) or 30m, 6h, 1d")

    def __str__(self) -> str:
        return f"{self.rows} rows" if self.rows else f"{self.seconds:g} s"


def read_records(directory: str | os.PathLike[str], window: Window | None = None,
                 version: str | None = None, s3_endpoint_url: str | None = None) -> pd.DataFrame:
    """The served rows of a record directory, oldest first: id, row, time, version, latency,
    one column per feature, and the prediction (the class index of a multiclass answer's
    largest probability, and ``probability_max``).

    Args:
        directory: The record directory, or ``s3://BUCKET/PREFIX``.
        window: Read only as far back as two such windows reach (of ``version``'s rows), not
            every file: a file last written before the oldest row needed holds none of them.
        version: The version whose rows ``window`` counts.
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` location.

    A line cut short (a file being written) is skipped.
    """
    if not store.exists(directory, s3_endpoint_url):
        raise DataError(f"record directory {directory} does not exist; pass the --record-dir "
                        "the server was started with")
    parts = []
    for found in store.list_files(directory, RECORDS_GLOB, s3_endpoint_url):  # newest first
        if window is not None and parts and found.mtime < _oldest_needed(parts, window, version):
            break  # its rows were all recorded before the oldest row the windows need
        part = _parse(store.read_text(found.uri, s3_endpoint_url) or "")
        if len(part):
            parts.append(part)
    if not parts:
        return pd.DataFrame(columns=[ID, ROW, TIME, VERSION, LATENCY, PREDICTION])
    return pd.concat(parts, ignore_index=True).sort_values(TIME, kind="stable",
                                                           ignore_index=True)


def _oldest_needed(parts: list[pd.DataFrame], window: Window, version: str | None) -> float:
    """The time of the oldest row two windows need, of the rows read so far (-inf: more rows
    are needed than were read)."""
    times = pd.concat([p[TIME][p[VERSION].astype(str) == version] if version else p[TIME]
                       for p in parts]).to_numpy(dtype=float)
    if window.rows:
        if times.size < 2 * window.rows:
            return -math.inf
        return float(np.sort(times)[-2 * window.rows])
    if not times.size:
        return -math.inf
    return float(times.max() - 2 * window.seconds)


def _parse(text: str) -> pd.DataFrame:
    columns: dict[str, list] = {}
    rows = 0
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line still being written
        outputs = record["outputs"]
        n = len(outputs)
        part = {ID: [record["id"]] * n, ROW: range(n), TIME: [record["time"]] * n,
                VERSION: [record["version"]] * n, LATENCY: [record["latency_ms"]] * n,
                **record["inputs"]}
        if n and isinstance(outputs[0], list):
            probabilities = np.asarray(outputs, dtype=float)
            part[PREDICTION] = probabilities.argmax(axis=1).astype(str).tolist()
            part["probability_max"] = probabilities.max(axis=1).tolist()
        else:
            part[PREDICTION] = outputs
        for name in part.keys() - columns.keys():  # a column first seen: earlier rows lack it
            columns[name] = [None] * rows
        for name, values in columns.items():
            values.extend(part.get(name, [None] * n))
        rows += n
    return pd.DataFrame(columns)


def read_labels(directory: str | os.PathLike[str],
                s3_endpoint_url: str | None = None) -> pd.DataFrame:
    """The label feedback of a record directory: id, row, label (the latest per id and row)."""
    rows = []
    files = store.list_files(directory, LABELS_GLOB, s3_endpoint_url)
    for found in sorted(files, key=lambda f: f.uri):
        for line in (store.read_text(found.uri, s3_endpoint_url) or "").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    frame = pd.DataFrame(rows, columns=[ID, ROW, LABEL])
    return frame.drop_duplicates([ID, ROW], keep="last")


def write_labels(directory: str | os.PathLike[str], labels: pd.DataFrame,
                 s3_endpoint_url: str | None = None) -> str:
    """Appends label feedback (columns ``request_id``, ``label``, optional ``row``, default 0)
    to the record directory, as one new ``labels-*.jsonl`` file.

    Raises:
        DataError: A column is missing.
    """
    missing = [c for c in ("request_id", LABEL) if c not in labels.columns]
    if missing:
        raise DataError(f"label feedback lacks column(s) {missing}; send request_id (the id a "
                        "recorded answer carries), label and optionally row (default 0)")
    rows = labels["row"] if "row" in labels.columns else pd.Series(0, index=labels.index)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    uri = store.join(directory, f"labels-{stamp}-{os.getpid()}.jsonl")
    lines = [json.dumps({ID: str(i), ROW: int(r), LABEL: _plain_label(v)})
             for i, r, v in zip(labels["request_id"], rows, labels[LABEL], strict=True)]
    # A rename or one PUT: a reader sees all of the feedback or none.
    store.write_text(uri, "\n".join(lines) + "\n", s3_endpoint_url)
    return uri


def _plain_label(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def windows(served: pd.DataFrame, window: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The current and previous windows of ``served`` (oldest first)."""
    if window.rows:
        n = window.rows
        return served.iloc[-n:], served.iloc[-2 * n:-n] if len(served) > n else served.iloc[:0]
    latest = served[TIME].max() if len(served) else 0.0
    current = served[served[TIME] > latest - window.seconds]
    previous = served[(served[TIME] > latest - 2 * window.seconds)
                      & (served[TIME] <= latest - window.seconds)]
    return current, previous
