"""ingest's split is a property of the rows, not of how they are read: the same fingerprint and
the same train/eval rows (values and dtypes) as recorded from the whole-frame ingest, for CSV,
Parquet, several files of a span, several spans and columns whose type depends on the whole
column."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from ctloop.components.ingest import logic
from ctloop.components.select_span import logic as select_span
from ctloop.data import datagen

# Digests of the splits the whole-frame ingest wrote (before ingest streamed): the sorted row
# hashes and the dtypes of the rows read back, and the row counts.
RECORDED = {
    "csv-latest": (("327f0f972a8051f2", 550), ("a79bd8ce2c6e0be3", 150)),
    "csv-3spans": (("9a29ebff0d042b0e", 1685), ("fcb9bdba703d9028", 415)),
    "parquet-2spans": (("6bb6ec72a312d1da", 958), ("38a7427709810a71", 242)),
    "multi-file": (("8b8a0cd7e9bbf766", 725), ("8681b46134e93e2a", 175)),
    "multiclass": (("ec7232cf5b24dcb8", 1076), ("2daa0fcdf1890546", 324)),
    "regression": (("50c595f6d964c5ec", 482), ("6c12641b202eaeaa", 118)),
    "odd-types": (("3b4e96e6f833b496", 702), ("a171e2b690fb1a8f", 198)),
}
CLASSES = {"multiclass": ["basic", "premium", "standard"], "regression": []}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-inputs")
    datagen.write_spans(root / "csv", 3, rows=700)
    datagen.write_spans(root / "pq", 2, rows=600, fmt="parquet")
    multi = root / "multi" / "span-1"
    multi.mkdir(parents=True)
    for i in range(3):
        datagen.generate_span(datagen.SpanSpec(i + 1, rows=300)).to_csv(
            multi / f"part-{i}.csv", index=False)
    # Types a reader can only know from the whole column: text that starts after 500 empty
    # cells, integers that end in missing values, booleans with and without empty cells.
    rows = 900
    rng = np.random.default_rng(0)
    (root / "odd").mkdir()
    pd.DataFrame({
        "late_text": [None] * 500 + [f"v{i % 7}" for i in range(400)],
        "late_missing_int": list(range(800)) + [None] * 100,
        "flag": ["True", "False"] * 450,
        "maybe_flag": ["True", "False", ""] * 300,
        "x": rng.normal(size=rows).round(6),
        "y": rng.integers(0, 2, rows),
    }).to_csv(root / "odd" / "data.csv", index=False)
    return {
        "csv-latest": (root / "csv", 1, datagen.LABEL, [datagen.ID_COLUMN], "binary"),
        "csv-3spans": (root / "csv", 3, datagen.LABEL, [datagen.ID_COLUMN], "binary"),
        "parquet-2spans": (root / "pq", 2, datagen.LABEL, [datagen.ID_COLUMN], "binary"),
        "multi-file": (root / "multi", 1, datagen.LABEL, [datagen.ID_COLUMN], "binary"),
        "multiclass": (root / "csv", 2, "plan", [datagen.ID_COLUMN], "multiclass"),
        "regression": (root / "pq", 1, "monthly_charges", [datagen.ID_COLUMN], "regression"),
        "odd-types": (root / "odd" / "data.csv", 1, "y", [], "binary"),
    }


def _digest(path) -> tuple[str, int]:
    frame = pd.read_parquet(path)
    digest = hashlib.sha256(
        np.sort(pd.util.hash_pandas_object(frame, index=False).to_numpy()).tobytes())
    digest.update(str([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    return digest.hexdigest()[:16], len(frame)


# Whole files in one batch and one Parquet file per split; and batches of 64 rows (a batch of
# "late_text" holds only missing values, one of "late_missing_int" only integers) into parts of
# 100 rows.
SIZES = {"one-batch": (logic.BATCH_ROWS, logic.SHARD_ROWS), "small-batches": (64, 100)}


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("case", sorted(RECORDED))
def test_same_fingerprint_and_split_as_recorded(inputs, tmp_path, case, size):
    data, spans, label, exclude, task = inputs[case]
    batch_rows, shard_rows = SIZES[size]
    selected = select_span.run(str(data), spans)
    result = logic.run(selected.files, selected.fingerprint, selected.spans, label, exclude, 20,
                       str(tmp_path / "train"), str(tmp_path / "eval"), task=task,
                       batch_rows=batch_rows, shard_rows=shard_rows)
    for split, rows in (("train", result.train_rows), ("eval", result.eval_rows)):
        parts = sorted(p.name for p in (tmp_path / split).iterdir())
        assert parts == [f"part-{i:05d}.parquet" for i in range(-(-rows // shard_rows))]
    assert result.fingerprint == selected.fingerprint
    assert (_digest(tmp_path / "train"), _digest(tmp_path / "eval")) == RECORDED[case]
    assert (result.train_rows, result.eval_rows) == (RECORDED[case][0][1], RECORDED[case][1][1])
    assert result.label_classes == CLASSES.get(task, ["0", "1"])
