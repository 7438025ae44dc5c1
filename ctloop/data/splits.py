"""The train and eval splits read as a stream of batches, so that no split is held whole.

A split is one Parquet file or a folder of ``part-*.parquet`` shards (ingest's sharded output,
same columns and dtypes in each). It is read ``READ_ROWS`` rows at a time with
``pyarrow.parquet.ParquetFile.iter_batches``; each chunk goes through the feature contract's
``to_inputs``, so a value the schema's types cannot hold becomes missing exactly as before.

Training sees ``Split.dataset``: ``tf.data.Dataset.from_generator`` over the chunks, with the
contract's signature. The preprocessing layers (means, stds, vocabularies) and a user module's
``train`` columns come from ``Split.sample``: a uniform sample of at most ``SAMPLE_ROWS`` rows,
drawn with the seed, in file order (a split of at most that many rows is its sample, whole).
Evaluation reads ``Split.chunks`` in file order: TFMA's record batches, the no-skill predictions.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ctloop import contract
from ctloop.contract import FeatureSpec
from ctloop.errors import DataError

READ_ROWS = 8192  # rows one Parquet read holds in memory
# The preprocessing adapts on at most this many rows: the standard error of a mean is then under
# 0.4 % of the feature's std, and a value seen in 1 row of 10,000 is expected 10 times, so the
# 100 most frequent values (MAX_VOCABULARY) of any realistic column are found.
SAMPLE_ROWS = 100_000
# Rows pooled and permuted before they are batched (seeded, a new order each epoch; the shards'
# order is permuted too): a split of at most this many rows is shuffled whole, as before.
SHUFFLE_ROWS = 100_000

Columns = dict[str, np.ndarray]


def shards(path: str) -> list[str]:
    """The Parquet files of a split: the file itself, or a folder's ``part-*.parquet`` files.

    Raises:
        DataError: Nothing at ``path``, or a folder without ``part-*.parquet`` files.
    """
    where = Path(path)
    if where.is_file():
        return [str(where)]
    found = sorted(where.glob("part-*.parquet")) if where.is_dir() else []
    if not found:
        raise DataError(f"split {path} is neither a Parquet file nor a folder of "
                        "part-*.parquet files; pass ingest's train_data or eval_data")
    return [str(file) for file in found]


def _dataset(path: str, dictionary: tuple[str, ...] = ()):
    """The split's ``shards`` as one pyarrow dataset; text columns in ``dictionary`` are read
    dictionary-encoded (other types are read as they are)."""
    import pyarrow.dataset as ds

    options = ds.ParquetReadOptions(dictionary_columns=list(dictionary))
    return ds.dataset(shards(path), format=ds.ParquetFileFormat(read_options=options))


def columns(path: str) -> list[str]:
    """The column names of a split."""
    return _dataset(path).schema.names


def rows(path: str) -> int:
    """The rows of a split, from the files' footers."""
    return _dataset(path).count_rows()


def column(path: str, name: str):
    """One column of a split as a pandas Series, or None when the split has no such column.

    Text comes back dictionary-encoded (a pandas categorical): each row is an index into the
    distinct values, not a string of its own, so a whole column costs about a number per row.
    """
    dataset = _dataset(path, (name,))
    if name not in dataset.schema.names:
        return None
    return dataset.to_table(columns=[name]).column(name).to_pandas()


class _Once(logging.Filter):
    """Passes a feature's contract warning once per split read, not once per chunk."""

    def __init__(self):
        super().__init__()
        self.seen: set = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.msg, record.args[:1] if isinstance(record.args, tuple) else ())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@dataclasses.dataclass
class Split:
    """One split's files, the features and label read from them, and its row count (from the
    Parquet footers, without reading the rows)."""

    files: list[str]
    features: list[FeatureSpec]
    label: str
    label_dtype: type
    rows: int

    @classmethod
    def of(cls, path: str, features: list[FeatureSpec], label: str,
           multiclass: bool = False) -> Split:
        """The split at ``path``; labels as ``int64`` class indices for a multiclass task, else
        ``float32`` (``Task.labels``' encoding)."""
        import pyarrow.parquet as pq

        files = shards(path)
        rows = 0
        for file in files:
            metadata = pq.ParquetFile(file)
            if label not in metadata.schema_arrow.names:
                raise DataError(f"split file {file} has no label column {label!r}; pass the "
                                "label ingest encoded")
            rows += metadata.metadata.num_rows
        return cls(files, features, label, np.int64 if multiclass else np.float32, rows)

    def chunks(self, order: list[int] | None = None, worker: int = 0, workers: int = 1
               ) -> Iterator[tuple[Columns, np.ndarray]]:
        """``(inputs, labels)`` of ``READ_ROWS`` rows at a time, the files in ``order`` (None:
        as listed); with ``workers`` > 1, only the rows whose index in the split (files as
        listed) is ``worker`` modulo ``workers``."""
        import pyarrow.parquet as pq

        offsets = np.cumsum([0] + [pq.ParquetFile(f).metadata.num_rows for f in self.files])
        once = _Once()
        contract.log.addFilter(once)
        try:
            for index in order if order is not None else range(len(self.files)):
                parquet = pq.ParquetFile(self.files[index])
                wanted = {f.name for f in self.features} | {self.label}
                columns = [name for name in parquet.schema_arrow.names if name in wanted]
                start = int(offsets[index])
                for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=columns):
                    frame = batch.to_pandas()
                    if workers > 1:
                        mine = (np.arange(start, start + len(frame)) % workers) == worker
                        start += len(frame)
                        frame = frame[mine]
                    yield (contract.to_inputs(frame, self.features),
                           frame[self.label].to_numpy(dtype=np.float64))
        finally:
            contract.log.removeFilter(once)

    def sample(self, rows: int, seed: int) -> tuple[Columns, np.ndarray]:
        """A uniform sample of at most ``rows`` rows, in file order, and their raw labels
        (float64): the rows with the ``rows`` smallest seeded random keys."""
        rng = np.random.default_rng([seed, 0x5A])
        kept: list[tuple[Columns, np.ndarray, np.ndarray, np.ndarray]] = []
        position = 0
        for inputs, labels in self.chunks():
            count = len(labels)
            keys = rng.random(count) if self.rows > rows else np.zeros(count)
            kept.append((inputs, labels, keys, np.arange(position, position + count)))
            position += count
            if sum(len(part[1]) for part in kept) > rows:
                joined = _concat(kept)
                kept = [_take(joined, np.argpartition(joined[2], rows)[:rows])]
        if not kept:
            return {f.name: _empty(f) for f in self.features}, np.zeros(0)
        inputs, labels, _, positions = _concat(kept)
        in_order = np.argsort(positions, kind="stable")
        return {name: values[in_order] for name, values in inputs.items()}, labels[in_order]

    def head(self, rows: int) -> Columns:
        """The first ``rows`` rows' inputs."""
        inputs, _ = next(self.chunks(), ({f.name: _empty(f) for f in self.features}, None))
        return {name: values[:rows] for name, values in inputs.items()}

    def batches(self, batch_size: int, rng: np.random.Generator | None = None,
                worker: int = 0, workers: int = 1, steps: int | None = None
                ) -> Iterator[tuple[Columns, np.ndarray]]:
        """Batches of ``batch_size`` rows: in file order, or with ``rng`` shuffled (the files'
        order permuted, and the rows within each pool of ``SHUFFLE_ROWS``); with ``steps``, that
        many full batches and no more (every worker of a multi-worker job must take as many
        steps)."""
        order = None if rng is None else list(rng.permutation(len(self.files)))
        pool: list[tuple[Columns, np.ndarray]] = []
        emitted = 0
        for chunk in self.chunks(order, worker, workers):
            pool.append(chunk)
            if sum(len(labels) for _, labels in pool) < SHUFFLE_ROWS:
                continue
            inputs, labels = _pooled(pool, rng)
            full = len(labels) // batch_size * batch_size
            for first in range(0, full, batch_size):
                if steps is not None and emitted == steps:
                    return
                yield self._batch(inputs, labels, slice(first, first + batch_size))
                emitted += 1
            pool = [({n: v[full:] for n, v in inputs.items()}, labels[full:])]
        if not pool:
            return
        inputs, labels = _pooled(pool, rng)
        for first in range(0, len(labels), batch_size):
            if steps is not None and (emitted == steps or first + batch_size > len(labels)):
                return
            yield self._batch(inputs, labels, slice(first, first + batch_size))
            emitted += 1

    def _batch(self, inputs: Columns, labels: np.ndarray, rows: slice
               ) -> tuple[Columns, np.ndarray]:
        return ({name: values[rows] for name, values in inputs.items()},
                labels[rows].astype(self.label_dtype))

    def dataset(self, batch_size: int, seed: int | None = None, worker: int = 0,
                workers: int = 1, steps: int | None = None):
        """``batches`` as a ``tf.data.Dataset`` of ``(inputs, labels)`` with the contract's
        signature; with ``seed``, shuffled in a new order each time it is iterated (each epoch),
        the same orders for the same seed."""
        import tensorflow as tf

        signature = (
            {f.name: tf.TensorSpec([None], tf.float32 if f.dtype == contract.NUMERIC
                                   else tf.string, name=f.name) for f in self.features},
            tf.TensorSpec([None], tf.int64 if self.label_dtype is np.int64 else tf.float32),
        )
        epochs = itertools.count()

        def generate():
            rng = None if seed is None else np.random.default_rng([seed, next(epochs)])
            yield from self.batches(batch_size, rng, worker, workers, steps)

        size = steps if steps is not None else math.ceil(self.rows / batch_size)
        return (tf.data.Dataset.from_generator(generate, output_signature=signature)
                .apply(tf.data.experimental.assert_cardinality(size))
                .prefetch(2))


def _empty(feature: FeatureSpec) -> np.ndarray:
    return np.zeros(0, np.float32 if feature.dtype == contract.NUMERIC else object)


def _concat(parts: list[tuple]) -> tuple:
    """Parts of ``(inputs, *arrays)`` joined row-wise."""
    if len(parts) == 1:
        return parts[0]
    inputs = {name: np.concatenate([part[0][name] for part in parts]) for name in parts[0][0]}
    columns = zip(*(p[1:] for p in parts), strict=True)
    return (inputs, *(np.concatenate(arrays) for arrays in columns))


def _take(joined: tuple, rows: np.ndarray) -> tuple:
    return ({name: values[rows] for name, values in joined[0].items()},
            *(array[rows] for array in joined[1:]))


def _pooled(pool: list[tuple[Columns, np.ndarray]], rng: np.random.Generator | None
            ) -> tuple[Columns, np.ndarray]:
    inputs, labels = _concat(pool)
    if rng is None:
        return inputs, labels
    order = rng.permutation(len(labels))
    return {name: values[order] for name, values in inputs.items()}, labels[order]
