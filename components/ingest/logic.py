"""Ingest: pick a span, read its CSV/Parquet files, split train/eval by a stable hash, fingerprint.

No kfp import: this is called in-process by tests and by the KFP wrapper in component.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import pandas as pd

from ctloop import storage
from ctloop.errors import ConfigError, DataError

SUPPORTED_SUFFIXES = (".csv", ".parquet")
_SPAN_RE = re.compile(r"(?:^|/)span-(\d+)(?=/|$)")


@dataclasses.dataclass(frozen=True)
class IngestResult:
    span: int
    files: list[str]
    fingerprint: str
    train_rows: int
    eval_rows: int
    columns: list[str]
    label_classes: list[str]


def select_span(data_uri: str) -> tuple[int, list[storage.StoredFile]]:
    """The latest span's data files under ``data_uri``.

    ``data_uri`` is a file, a folder of data files, or a folder of ``span-<N>/`` folders (the
    highest N wins). A path without a span number is span 0.
    """
    files = [f for f in storage.list_files(data_uri) if f.uri.endswith(SUPPORTED_SUFFIXES)]
    if not files:
        raise DataError(
            f"data path {data_uri} has no .csv or .parquet files; point --data at a data file "
            "or a folder of them"
        )
    spans = {f.uri: _span_of(f.uri) for f in files}
    latest = max(spans.values())
    return latest, [f for f in files if spans[f.uri] == latest]


def read_files(files: list[storage.StoredFile]) -> tuple[pd.DataFrame, str]:
    """Reads and concatenates the files; returns the rows and the data fingerprint.

    The fingerprint is a SHA-256 over each file's name, size and content, so it changes when any
    byte of the input changes; it is recorded with the datasets and with every pushed model.
    """
    digest = hashlib.sha256()
    frames = []
    for stored in files:
        path = storage.fetch(stored.uri)
        content = path.read_bytes()
        digest.update(f"{Path(stored.uri).name}\0{stored.size}\0".encode())
        digest.update(hashlib.sha256(content).digest())
        frames.append(_read_table(stored.uri, path))
    columns = list(frames[0].columns)
    for stored, frame in zip(files[1:], frames[1:], strict=True):
        if list(frame.columns) != columns:
            raise DataError(
                f"data file {stored.uri} has columns {list(frame.columns)} but {files[0].uri} has "
                f"{columns}; give every file of a span the same columns"
            )
    return pd.concat(frames, ignore_index=True), digest.hexdigest()


def encode_label(frame: pd.DataFrame, label: str) -> tuple[pd.Series, list[str]]:
    """Maps a binary label to 0/1. Returns the encoded column and the class names [neg, pos]."""
    if label not in frame.columns:
        raise DataError(
            f"label column {label!r} is not in the data (columns: {', '.join(frame.columns)}); "
            "pass the right --label"
        )
    values = frame[label]
    if values.isna().any():
        raise DataError(
            f"label column {label!r} has {int(values.isna().sum())} missing values; "
            "drop or fill those rows"
        )
    classes = sorted(values.unique().tolist())
    if len(classes) != 2:
        raise DataError(
            f"label column {label!r} has {len(classes)} distinct values {classes[:5]}; "
            "a binary task needs exactly 2"
        )
    encoded = (values == classes[1]).astype("int64")
    return encoded, [str(c) for c in classes]


def split(frame: pd.DataFrame, eval_percent: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic train/eval split by a hash of each row's content.

    The same row lands in the same split in every run and on every machine, whatever the row
    order, so metrics stay comparable across reruns and spans.
    """
    if not 1 <= eval_percent <= 99:
        raise ConfigError(f"eval_percent {eval_percent} is out of range: use 1..99 (default 20)")
    buckets = pd.util.hash_pandas_object(frame, index=False).to_numpy() % 100
    is_eval = buckets < eval_percent
    return frame[~is_eval].reset_index(drop=True), frame[is_eval].reset_index(drop=True)


def run(
    data_uri: str,
    label: str,
    exclude: list[str],
    eval_percent: int,
    train_path: str,
    eval_path: str,
) -> IngestResult:
    """Reads the latest span of ``data_uri`` and writes the train and eval splits as Parquet."""
    span, files = select_span(data_uri)
    frame, fingerprint = read_files(files)
    if frame.empty:
        raise DataError(f"data path {data_uri} (span {span}) has a header but no rows; add rows")
    unknown = sorted(set(exclude) - set(frame.columns))
    if unknown:
        raise ConfigError(
            f"excluded columns {unknown} are not in the data (columns: {', '.join(frame.columns)});"
            " fix --exclude"
        )
    if label in exclude:
        raise ConfigError(f"label column {label!r} is also excluded; remove it from --exclude")
    frame[label], classes = encode_label(frame, label)
    train, evaluation = split(frame, eval_percent)
    for name, part in (("train", train), ("eval", evaluation)):
        if part[label].nunique() < 2:
            raise DataError(
                f"the {name} split of {data_uri} (span {span}) has a single label class; "
                "provide more rows of both classes"
            )
    train.to_parquet(train_path, index=False)
    evaluation.to_parquet(eval_path, index=False)
    return IngestResult(
        span=span,
        files=[f.uri for f in files],
        fingerprint=fingerprint,
        train_rows=len(train),
        eval_rows=len(evaluation),
        columns=list(frame.columns),
        label_classes=classes,
    )


def _span_of(uri: str) -> int:
    found = _SPAN_RE.findall(uri)
    return int(found[-1]) if found else 0


def _read_table(uri: str, path: Path) -> pd.DataFrame:
    try:
        if uri.endswith(".parquet"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"data file {uri} is empty; remove it or write a header and rows") from exc
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"data file {uri} cannot be read ({first}); check its format") from exc
