"""Ingest: read exactly the files select_span chose, check they are what it fingerprinted, split
train/eval by a stable hash, and write each split as a folder of Parquet files.

The read streams: memory is bounded by a batch of rows (``BATCH_ROWS``), not by the span. A first
pass over the files learns what only the whole data tells (each column's type, the label's
classes, missing labels, row counts); a second one encodes, splits and writes each batch. Each
row lands in the split, with the values and types, that a read of the whole span at once gives.

No kfp import: this is called in-process by tests and by the KFP wrapper in component.py.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np
import pandas as pd

from ctloop import contract
from ctloop.components.ingest import reading, shards
from ctloop.components.ingest.columns import Column, Layout, cast, layout
from ctloop.components.ingest.sources import Source, open_files
from ctloop.errors import ConfigError, DataError
from ctloop.settings import MAX_CLASSES

# Rows read, encoded, split and written at a time: the memory ingest needs (about 40 MB of
# frames for the generated 11-column data).
BATCH_ROWS = 100_000
# Rows per Parquet file of a split: a split is a folder of shards.PART files, in row order, that
# pandas/pyarrow read as one table and Beam or tf.data read in parallel.
SHARD_ROWS = 500_000


@dataclasses.dataclass(frozen=True)
class IngestResult:
    span: int
    spans: list[int]
    files: list[str]
    fingerprint: str
    train_rows: int
    eval_rows: int
    columns: list[str]
    label_classes: list[str]


@dataclasses.dataclass(frozen=True)
class LabelCode:
    """How the label is encoded for the task: ``classes`` are the class names (the positive one
    last for binary), ``values`` the label's values as text, in class-index order."""

    task: str
    classes: list[str]
    values: list[str]

    def encode(self, values: pd.Series) -> pd.Series:
        if self.task == contract.REGRESSION:
            return pd.to_numeric(values, errors="coerce").astype("float64")
        if self.task == contract.MULTICLASS:
            index = {name: i for i, name in enumerate(self.values)}
            return values.astype(str).map(index).astype("int64")
        return (values.astype(str) == self.values[1]).astype("int64")


def check_label(label: str, columns: list[str], missing: int, task: str,
                positive_label: str | None) -> None:
    """The label is a column with no missing value; a positive label is for a binary task."""
    if label not in columns:
        raise DataError(
            f"label column {label!r} is not in the data (columns: {', '.join(columns)}); "
            "pass the right --label"
        )
    if missing:
        raise DataError(
            f"label column {label!r} has {missing} missing values; drop or fill those rows"
        )
    if positive_label is not None and task != contract.BINARY:
        raise ConfigError(f"positive label {positive_label!r} applies to a binary task, not "
                          f"{task!r}; leave it empty")


def label_code(label: str, task: str, distinct: pd.Series, positive_label: str | None = None,
               non_numeric: tuple[int, object] = (0, None)) -> LabelCode:
    """The encoding of the label for the task, from its distinct values (every row's, typed as
    the whole column) and, for regression, how many of its values are not numbers (and the
    first)."""
    if task == contract.REGRESSION:
        count, example = non_numeric
        if count:
            raise DataError(
                f"label column {label!r} has {count} non-numeric values such as "
                f"{example!r}; a regression task needs numbers (fix the rows, or use "
                "task 'multiclass')"
            )
        return LabelCode(task, [], [])
    classes = [str(c) for c in sorted(distinct.unique().tolist())]
    if task == contract.MULTICLASS:
        if not 2 <= len(classes) <= MAX_CLASSES:
            raise DataError(
                f"label column {label!r} has {len(classes)} distinct values {classes[:5]}; a "
                f"multiclass task needs 2 to {MAX_CLASSES} (for a numeric target use task "
                "'regression')"
            )
        return LabelCode(task, classes, classes)
    if len(classes) != 2:
        raise DataError(
            f"label column {label!r} has {len(classes)} distinct values {classes[:5]}; "
            "a binary task needs exactly 2 (use task 'multiclass' or 'regression' for more)"
        )
    if positive_label is not None and positive_label not in classes:
        raise ConfigError(
            f"positive label {positive_label!r} is not a value of label column {label!r} "
            f"(values: {classes}); pass one of them"
        )
    positive = positive_label if positive_label is not None else classes[1]
    negative = classes[0] if positive == classes[1] else classes[1]
    return LabelCode(task, [negative, positive], [negative, positive])


def _non_numeric(values: pd.Series) -> tuple[int, object]:
    bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
    return int(bad.sum()), (values[bad].iloc[0] if bad.any() else None)


def encode_label(frame: pd.DataFrame, label: str, task: str = contract.BINARY,
                 positive_label: str | None = None) -> tuple[pd.Series, list[str]]:
    """Encodes the label column for the task. Returns the encoded column and the class names.

    - ``binary``: 0/1; classes ``[negative, positive]``. The positive class is ``positive_label``
      (compared as text, so ``"1"`` names 1), or else the second of the two values in sorted
      order (1 of 0/1, ``"yes"`` of no/yes).
    - ``multiclass``: the index of the value among the classes in sorted order (int64); the
      classes as text, at most ``MAX_CLASSES``.
    - ``regression``: the value as float64; no classes.
    """
    check_label(label, list(frame.columns), int(frame[label].isna().sum())
                if label in frame.columns else 0, task, positive_label)
    values = frame[label]
    code = label_code(label, task, pd.Series(values.unique()), positive_label,
                      _non_numeric(values) if task == contract.REGRESSION else (0, None))
    return code.encode(values), code.classes


def numbers_as_floats(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Integer and boolean columns (but the label) as float64, as the model reads them.

    A CSV reader types an integer column float64 as soon as one value is missing, so the same
    column would be INT in one span and FLOAT in the next: a type anomaly that is not in the
    data. Every numeric feature is float32 in the model anyway (``ctloop.contract``).
    """
    kinds = {name: frame[name].dtype.kind for name in frame.columns if name != label}
    floats = [name for name, kind in kinds.items() if kind in "iub"]
    return frame.astype({name: "float64" for name in floats}) if floats else frame


def check_splits(distinct: dict[str, int], task: str, spans: list[int]) -> None:
    """Both splits must be able to train and judge a model of the task.

    ``distinct``: split name -> its count of distinct label values (exact up to 2). Binary: both
    classes in each split (AUC needs both). Multiclass: two classes or more in each. Regression:
    two distinct values or more in the train split.
    """
    needs = {contract.BINARY: (2, 2), contract.MULTICLASS: (2, 2), contract.REGRESSION: (2, 1)}
    for name, least in zip(("train", "eval"), needs[task], strict=True):
        if distinct[name] < least:
            raise DataError(
                f"the {name} split of spans {spans} has {distinct[name]} distinct label "
                f"value(s) and a {task} task needs {least} or more there; provide more rows "
                "of every class (or value)"
            )


def _check_eval_percent(eval_percent: int) -> None:
    if not 1 <= eval_percent <= 99:
        raise ConfigError(f"eval_percent {eval_percent} is out of range: use 1..99")


def is_eval(frame: pd.DataFrame, eval_percent: int) -> np.ndarray:
    """Which rows go to the eval split, by a hash of each row's content (and column types)."""
    buckets = pd.util.hash_pandas_object(frame, index=False).to_numpy() % 100
    return buckets < eval_percent


def split(frame: pd.DataFrame, eval_percent: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic train/eval split by a hash of each row's content.

    The same row lands in the same split in every run and on every machine, whatever the row
    order or the batch it is read in, so metrics stay comparable across reruns and spans.
    """
    _check_eval_percent(eval_percent)
    chosen = is_eval(frame, eval_percent)
    return frame[~chosen].reset_index(drop=True), frame[chosen].reset_index(drop=True)


@dataclasses.dataclass
class _Scan:
    columns: list[str]
    rows: int
    seen: dict[str, Column]
    missing_labels: int
    distinct_labels: pd.Series | None
    non_numeric: tuple[int, object]


def _scan(sources: list[Source], label: str, task: str, batch_rows: int) -> _Scan:
    """The first pass: the columns of every file (the same in each), their types over every
    batch, the row count, and the label's missing values and distinct values."""
    columns = None
    rows, missing, distinct, non_numeric = 0, 0, [], (0, None)
    seen: dict[str, Column] = {}
    for source in sources:
        names = reading.header(source.uri, source.path)
        if columns is None:
            columns = names
            seen = {name: Column() for name in columns}
        elif names != columns:
            raise DataError(
                f"data file {source.uri} has columns {names} but {sources[0].uri} has "
                f"{columns}; give every file of the spans read the same columns"
            )
        for frame in reading.batches(source.uri, source.path, batch_rows):
            rows += len(frame)
            for name in columns:
                seen[name].add(source.uri, name, frame[name])
            if label in frame.columns:
                values = frame[label]
                missing += int(values.isna().sum())
                if task == contract.REGRESSION:
                    count, example = _non_numeric(values)
                    non_numeric = (non_numeric[0] + count,
                                   non_numeric[1] if non_numeric[0] else example)
                else:
                    distinct.append(pd.Series(values.dropna().unique()))
                    if len(distinct) > 16:  # keep the list short; duplicates go
                        distinct = [pd.concat(distinct, ignore_index=True).drop_duplicates()]
        source.check_unchanged()
    merged = pd.concat(distinct, ignore_index=True).drop_duplicates() if distinct else None
    return _Scan(columns or [], rows, seen, missing, merged, non_numeric)


def _batches(sources: list[Source], shape: Layout, batch_rows: int,
             usecols: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Every file's rows, a batch at a time, typed as the whole data types them."""
    for source in sources:
        as_text = {name: str for name in shape.as_text if usecols is None or name in usecols}
        parsed = reading.batches(source.uri, source.path, batch_rows,
                                 None if reading.is_parquet(source.uri) else as_text, usecols)
        for frame in parsed:
            yield cast(frame, shape)
        source.check_unchanged()


def run(
    files: list[str],
    fingerprint: str,
    spans: list[int],
    label: str,
    exclude: list[str],
    eval_percent: int,
    train_path: str,
    eval_path: str,
    s3_endpoint_url: str | None = None,
    positive_label: str | None = None,
    task: str = contract.BINARY,
    batch_rows: int = BATCH_ROWS,
    shard_rows: int = SHARD_ROWS,
) -> IngestResult:
    """Reads select_span's files and writes the train and eval splits as folders of Parquet files.

    Args:
        files: The files to read (select_span's ``files``).
        fingerprint: Their fingerprint (select_span's ``fingerprint``), checked on read.
        spans: Their spans (select_span's ``spans_read``); the latest is the run's span.
        label: The label column.
        exclude: Columns that are not features; checked to exist, kept in the splits.
        eval_percent: Share of rows, in percent, that go to the eval split.
        train_path: The folder to write the train split into (``part-00000.parquet``, ...).
        eval_path: The folder to write the eval split into.
        s3_endpoint_url: An S3-compatible endpoint; None: boto3's default.
        positive_label: The label value that is the positive class of a binary task (None: the
            second of the two in sorted order).
        task: ``binary``, ``multiclass`` or ``regression``: how the label is encoded.
        batch_rows: Rows read and split at a time (bounds the memory used).
        shard_rows: Rows per Parquet file of a split.
    """
    if not spans:
        raise ConfigError("spans is empty; pass select_span's spans_read output")
    span = max(spans)
    task = contract.task(task)
    with tempfile.TemporaryDirectory(prefix="ctloop-ingest-") as spool:
        sources = open_files(files, fingerprint, spool, s3_endpoint_url)
        scan = _scan(sources, label, task, batch_rows)
        if not scan.rows:
            raise DataError(f"data files of spans {spans} have a header but no rows; add rows")
        unknown = sorted(set(exclude) - set(scan.columns))
        if unknown:
            raise ConfigError(
                f"excluded columns {unknown} are not in the data (columns: "
                f"{', '.join(scan.columns)}); fix --exclude"
            )
        if label in exclude:
            raise ConfigError(f"label column {label!r} is also excluded; remove it from --exclude")
        check_label(label, scan.columns, scan.missing_labels, task, positive_label)
        _check_eval_percent(eval_percent)
        csv = any(not reading.is_parquet(s.uri) for s in sources)
        shape = layout(scan.columns, scan.seen, csv)
        distinct = scan.distinct_labels
        if label in shape.as_text:  # read as text: its classes are its text
            distinct = pd.concat(
                [f[label].drop_duplicates() for f in _batches(sources, shape, batch_rows,
                                                              [label])],
                ignore_index=True)
        elif distinct is not None and label in shape.dtypes:
            distinct = distinct.astype(shape.dtypes[label])
        code = label_code(label, task, distinct if distinct is not None else pd.Series([]),
                          positive_label, scan.non_numeric)
        try:
            counts = _write(sources, shape, code, label, eval_percent, train_path, eval_path,
                            batch_rows, shard_rows)
        except BaseException:
            shutil.rmtree(train_path, ignore_errors=True)
            shutil.rmtree(eval_path, ignore_errors=True)
            raise
    try:
        check_splits({name: len(values) for name, values in counts.distinct.items()}, task, spans)
    except DataError:
        shutil.rmtree(train_path, ignore_errors=True)
        shutil.rmtree(eval_path, ignore_errors=True)
        raise
    return IngestResult(
        span=span,
        spans=list(spans),
        files=list(files),
        fingerprint=fingerprint,
        train_rows=counts.rows["train"],
        eval_rows=counts.rows["eval"],
        columns=list(scan.columns),
        label_classes=code.classes,
    )


@dataclasses.dataclass
class _Written:
    rows: dict[str, int]
    distinct: dict[str, set]


def _write(sources: list[Source], shape: Layout, code: LabelCode, label: str,
           eval_percent: int, train_path: str, eval_path: str, batch_rows: int,
           shard_rows: int) -> _Written:
    """The second pass: encodes, splits and writes every batch."""
    import pyarrow as pa

    for path in (train_path, eval_path):
        shards.prepare_output(path)
    writers = None
    # Up to 2 distinct label values per split: all that check_splits needs to know.
    distinct: dict[str, set] = {"train": set(), "eval": set()}
    for frame in _batches(sources, shape, batch_rows):
        frame[label] = code.encode(frame[label])
        frame = numbers_as_floats(frame, label)
        if writers is None:
            schema = pa.Schema.from_pandas(frame, preserve_index=False)
            for name, arrow_type in shape.arrow_types.items():
                if name == label:  # encoded: a number now
                    continue
                schema = schema.set(schema.get_field_index(name), pa.field(name, arrow_type))
            writers = {"train": shards.Shards(train_path, schema, shard_rows),
                       "eval": shards.Shards(eval_path, schema, shard_rows)}
        chosen = is_eval(frame, eval_percent)
        for name, part in (("train", frame[~chosen]), ("eval", frame[chosen])):
            writers[name].write(part)
            if len(distinct[name]) < 2:
                distinct[name].update(part[label].drop_duplicates().head(2).tolist())
    for writer in (writers or {}).values():
        writer.close()
    return _Written({name: writers[name].rows if writers else 0 for name in distinct},
                    distinct)
