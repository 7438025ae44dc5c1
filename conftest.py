"""Fixtures shared by tests/ and components/*/tests/: generated data and the artifacts the
pipeline's first steps produce from it, built once per session with the real libraries."""

from __future__ import annotations

import atexit
import dataclasses
import sys
from pathlib import Path

import pytest

from ctloop import datagen

LABEL = datagen.LABEL
EXCLUDE = [datagen.ID_COLUMN]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The outputs of ingest -> validate_data -> train on span 1 of the generated data."""

    data_dir: Path
    train: Path
    eval: Path
    schema: Path
    model_dir: Path
    features: list


def validate_outputs(folder: Path):
    """validate_data's output paths inside ``folder``."""
    from ctloop.components.validate_data.logic import OutputPaths

    return OutputPaths(str(folder / "stats"), str(folder / "schema.pbtxt"),
                       str(folder / "anomalies"), str(folder / "stats.html"),
                       str(folder / "drift.html"), str(folder / "anomalies.md"))


@pytest.fixture(scope="session")
def spans_dir(tmp_path_factory) -> Path:
    """Spans 1-2 (clean), span 3 with 5% corrupt rows, as CSV, 3000 rows each."""
    out = tmp_path_factory.mktemp("data")
    datagen.write_spans(out, 2, rows=3000)
    datagen.write_spans(out, 1, first_span=3, rows=3000, corrupt=0.05)
    return out


@pytest.fixture(scope="session")
def prepared(spans_dir, tmp_path_factory) -> Prepared:
    from ctloop.components.ingest import logic as ingest
    from ctloop.components.train import logic as train
    from ctloop.components.validate_data import logic as validate

    work = tmp_path_factory.mktemp("prepared")
    ingest.run(str(spans_dir / "span-1"), LABEL, EXCLUDE, 20, str(work / "train.parquet"),
               str(work / "eval.parquet"))
    validate.run(str(work / "train.parquet"), str(work / "eval.parquet"), 1, LABEL, EXCLUDE,
                 None, None, None, validate_outputs(work))
    result = train.run(str(work / "train.parquet"), str(work / "eval.parquet"),
                       str(work / "schema.pbtxt"), LABEL, EXCLUDE,
                       train.Hyperparameters(epochs=4), str(work / "model"))
    return Prepared(spans_dir, work / "train.parquet", work / "eval.parquet",
                    work / "schema.pbtxt", work / "model", result.features)


def _drop_tensorflow_shutdown_noise() -> None:
    # TFMA keeps loaded models in Beam's shared handles until interpreter shutdown, where
    # TensorFlow 2.16's AtomicFunction.__del__ fails once module globals are gone and prints
    # "Exception ignored in ..." after pytest's summary, once per function. Drop exactly that
    # report; every other one still reaches stderr. Installed at exit, after pytest has restored
    # its own hook; binds what it uses, since module globals are cleared by the time it runs.
    def hook(unraisable, default=sys.unraisablehook, describe=repr):
        if "AtomicFunction.__del__" not in describe(unraisable.object):
            default(unraisable)

    sys.unraisablehook = hook


atexit.register(_drop_tensorflow_shutdown_noise)
