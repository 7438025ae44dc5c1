"""Ingest: read exactly the files select_span chose, check they are what it fingerprinted, split
train/eval by a stable hash.

No kfp import: this is called in-process by tests and by the KFP wrapper in component.py.
"""

from __future__ import annotations

import dataclasses
import io

import pandas as pd

from ctloop import contract
from ctloop.data import storage
from ctloop.data.tables import read_table
from ctloop.errors import ConfigError, DataChangedError, DataError
from ctloop.settings import MAX_CLASSES


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


def read_files(files: list[str], fingerprint: str, s3_endpoint_url: str | None = None
               ) -> pd.DataFrame:
    """Reads and concatenates the files, after checking they are the bytes select_span described.

    Each file is read once; the description of those very bytes (their SHA-256, or the store's
    ETag or hashes from the same response) gives the fingerprint they have now. If it is not
    ``fingerprint``, a file changed or went away since select_span listed it: the rows would not
    be the data the run (and KFP's cache key) says they are, so the run stops here.
    """
    if not files:
        raise ConfigError("files is empty; pass select_span's files output")
    contents, described = [], []
    for uri in files:
        try:
            content, stored = storage.read(uri, s3_endpoint_url)
        except FileNotFoundError as exc:
            raise DataChangedError(
                f"data file {uri} is gone since select_span listed it: the data changed while "
                "the run started; rerun the pipeline"
            ) from exc
        contents.append(content)
        described.append(stored)
    # Checked before parsing, so a file rewritten in between fails as changed, not as unreadable.
    read = storage.fingerprint(described)
    if read != fingerprint:
        raise DataChangedError(
            f"data files changed since select_span fingerprinted them (fingerprint "
            f"{fingerprint[:12]} selected, {read[:12]} read): the data changed while the run "
            "started; rerun the pipeline"
        )
    frames = [read_table(uri, io.BytesIO(content))
              for uri, content in zip(files, contents, strict=True)]
    columns = list(frames[0].columns)
    for uri, frame in zip(files[1:], frames[1:], strict=True):
        if list(frame.columns) != columns:
            raise DataError(
                f"data file {uri} has columns {list(frame.columns)} but {files[0]} has "
                f"{columns}; give every file of the spans read the same columns"
            )
    return pd.concat(frames, ignore_index=True)


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
    if positive_label is not None and task != contract.BINARY:
        raise ConfigError(f"positive label {positive_label!r} applies to a binary task, not "
                          f"{task!r}; leave it empty")
    if task == contract.REGRESSION:
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna()
        if bad.any():
            raise DataError(
                f"label column {label!r} has {int(bad.sum())} non-numeric values such as "
                f"{values[bad].iloc[0]!r}; a regression task needs numbers (fix the rows, or use "
                "task 'multiclass')"
            )
        return numbers.astype("float64"), []
    classes = [str(c) for c in sorted(values.unique().tolist())]
    if task == contract.MULTICLASS:
        if not 2 <= len(classes) <= MAX_CLASSES:
            raise DataError(
                f"label column {label!r} has {len(classes)} distinct values {classes[:5]}; a "
                f"multiclass task needs 2 to {MAX_CLASSES} (for a numeric target use task "
                "'regression')"
            )
        index = {name: i for i, name in enumerate(classes)}
        return values.astype(str).map(index).astype("int64"), classes
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
    return (values.astype(str) == positive).astype("int64"), [negative, positive]


def numbers_as_floats(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Integer and boolean columns (but the label) as float64, as the model reads them.

    A CSV reader types an integer column float64 as soon as one value is missing, so the same
    column would be INT in one span and FLOAT in the next: a type anomaly that is not in the
    data. Every numeric feature is float32 in the model anyway (``ctloop.contract``).
    """
    kinds = {name: frame[name].dtype.kind for name in frame.columns if name != label}
    floats = [name for name, kind in kinds.items() if kind in "iub"]
    return frame.astype({name: "float64" for name in floats}) if floats else frame


def check_splits(train: pd.DataFrame, evaluation: pd.DataFrame, label: str, task: str,
                 spans: list[int]) -> None:
    """Both splits must be able to train and judge a model of the task.

    Binary: both classes in each split (AUC needs both). Multiclass: two classes or more in each.
    Regression: two distinct values or more in the train split.
    """
    needs = {contract.BINARY: (2, 2), contract.MULTICLASS: (2, 2), contract.REGRESSION: (2, 1)}
    for (name, part), least in zip((("train", train), ("eval", evaluation)), needs[task],
                                   strict=True):
        if part[label].nunique() < least:
            raise DataError(
                f"the {name} split of spans {spans} has {part[label].nunique()} distinct label "
                f"value(s) and a {task} task needs {least} or more there; provide more rows "
                "of every class (or value)"
            )


def split(frame: pd.DataFrame, eval_percent: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic train/eval split by a hash of each row's content.

    The same row lands in the same split in every run and on every machine, whatever the row
    order, so metrics stay comparable across reruns and spans.
    """
    if not 1 <= eval_percent <= 99:
        raise ConfigError(f"eval_percent {eval_percent} is out of range: use 1..99")
    buckets = pd.util.hash_pandas_object(frame, index=False).to_numpy() % 100
    is_eval = buckets < eval_percent
    return frame[~is_eval].reset_index(drop=True), frame[is_eval].reset_index(drop=True)


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
) -> IngestResult:
    """Reads select_span's files and writes the train and eval splits as Parquet.

    Args:
        files: The files to read (select_span's ``files``).
        fingerprint: Their fingerprint (select_span's ``fingerprint``), checked on read.
        spans: Their spans (select_span's ``spans_read``); the latest is the run's span.
        label: The label column.
        exclude: Columns that are not features; checked to exist, kept in the splits.
        eval_percent: Share of rows, in percent, that go to the eval split.
        train_path: Where to write the train split.
        eval_path: Where to write the eval split.
        s3_endpoint_url: An S3-compatible endpoint; None: boto3's default.
        positive_label: The label value that is the positive class of a binary task (None: the
            second of the two in sorted order).
        task: ``binary``, ``multiclass`` or ``regression``: how the label is encoded.
    """
    if not spans:
        raise ConfigError("spans is empty; pass select_span's spans_read output")
    span = max(spans)
    frame = read_files(files, fingerprint, s3_endpoint_url)
    if frame.empty:
        raise DataError(f"data files of spans {spans} have a header but no rows; add rows")
    unknown = sorted(set(exclude) - set(frame.columns))
    if unknown:
        raise ConfigError(
            f"excluded columns {unknown} are not in the data (columns: {', '.join(frame.columns)});"
            " fix --exclude"
        )
    if label in exclude:
        raise ConfigError(f"label column {label!r} is also excluded; remove it from --exclude")
    frame[label], classes = encode_label(frame, label, contract.task(task), positive_label)
    frame = numbers_as_floats(frame, label)
    train, evaluation = split(frame, eval_percent)
    check_splits(train, evaluation, label, task, spans)
    train.to_parquet(train_path, index=False)
    evaluation.to_parquet(eval_path, index=False)
    return IngestResult(
        span=span,
        spans=list(spans),
        files=list(files),
        fingerprint=fingerprint,
        train_rows=len(train),
        eval_rows=len(evaluation),
        columns=list(frame.columns),
        label_classes=classes,
    )
