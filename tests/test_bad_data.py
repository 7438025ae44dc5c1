"""Bad data never deploys: each case ends in a one-line error naming the input and the fix, or in
the data-validation gate with a report, and the serving model stays the serving model.

Every case runs the pipeline's own steps in-process (select_span -> ingest -> validate_data ->
rollout, with a model that would otherwise be blessed) against a registry that serves version 1
(conftest's ``served_registry``); after each, the model server following that registry answers
the reference rows with the same predictions and version.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import EXCLUDE, LABEL, validate_outputs
from ctloop.components.ingest import logic as ingest
from ctloop.components.rollout import logic as rollout
from ctloop.components.select_span import logic as select_span
from ctloop.components.validate_data import logic as validate
from ctloop.data import datagen
from ctloop.errors import CtloopError, DataError
from ctloop.registry import LocalRegistry, Registry


@pytest.fixture
def registry(served_registry) -> Registry:
    """The registry the shared model server follows, serving version 1."""
    return served_registry.registry


def _serving_unchanged(served) -> None:
    registry = LocalRegistry(served.registry.root, "churn")
    assert registry.serving().number == 1
    assert [v.number for v in registry.versions()] == [1]
    served.assert_answers_as_before()


def _run(data_uri, registry: Registry, prepared, out):
    """The pipeline's steps up to rollout; returns (validation, rollout) results."""
    selected = select_span.run(str(data_uri))
    ingest.run(selected.files, selected.fingerprint, selected.spans, LABEL, EXCLUDE, 20,
               str(out / "train.parquet"), str(out / "eval.parquet"))
    serving = registry.serving()
    # As the pipeline does: drift against the latest earlier span's statistics (span 1's).
    previous = (1, str(prepared.train.parent / "stats" / "train.stats.tfrecord"))
    checked = validate.run(str(out / "train.parquet"), str(out / "eval.parquet"), selected.span,
                           LABEL, EXCLUDE, None, str(serving.schema_path), previous,
                           validate_outputs(out))
    pushed = rollout.run(str(prepared.model_dir), str(prepared.schema), checked.valid,
                         len(checked.blocking), True, "passed AUC >= 0.7", True,
                         "within the SLO", serving.number,
                         str(registry.root), registry.model_name, {})
    return checked, pushed


def _span(tmp_path, frame: pd.DataFrame, fmt: str = "csv"):
    path = tmp_path / "data" / "span-7" / f"data.{fmt}"
    path.parent.mkdir(parents=True)
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
    return tmp_path / "data"


def _good_rows(rows: int = 1500) -> pd.DataFrame:
    return datagen.generate_span(datagen.SpanSpec(7, rows=rows))


def _write(tmp_path, name: str, content: bytes):
    path = tmp_path / "data" / "span-7" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return tmp_path / "data"


# --- Inputs that cannot be read as data: a one-line error, nothing runs. ---------------------

def _header_and_rows() -> bytes:
    return _good_rows(300).to_csv(index=False).encode()


ERRORS = {
    "missing path": (lambda tmp: tmp / "nowhere", "does not exist"),
    "empty file": (lambda tmp: _write(tmp, "data.csv", b""), "is empty"),
    "header only": (
        lambda tmp: _write(tmp, "data.csv", b"age,plan,churned\n"), "header but no rows"),
    "wrong delimiter": (
        lambda tmp: _write(tmp, "data.csv", _header_and_rows().replace(b",", b";")),
        "looks semicolon-delimited; write it comma-separated"),
    "missing label column": (
        lambda tmp: _span(tmp, _good_rows().drop(columns=[LABEL])),
        f"label column {LABEL!r} is not in the data"),
    "label with a single class": (
        lambda tmp: _span(tmp, _good_rows().assign(**{LABEL: 0})), "has 1 distinct values"),
    "duplicate header": (
        lambda tmp: _write(tmp, "data.csv", _header_and_rows().replace(
            b"region,", b"plan,", 1)), "duplicate column names ['plan']"),
    "non-UTF-8 bytes": (
        lambda tmp: _write(tmp, "data.csv", _header_and_rows().replace(
            b"north", "n\u00f6rth".encode("latin-1"), 1)), "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_unreadable_input_is_a_one_line_error(case, registry, prepared, tmp_path,
                                               served_registry):
    make, message = ERRORS[case]
    with pytest.raises(CtloopError) as caught:
        _run(make(tmp_path), registry, prepared, tmp_path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    _serving_unchanged(served_registry)


def test_parquet_files_with_different_schemas_in_one_span(registry, prepared, tmp_path,
                                                           served_registry):
    folder = tmp_path / "data" / "span-7"
    folder.mkdir(parents=True)
    rows = _good_rows()
    rows.iloc[:700].to_parquet(folder / "part-0.parquet", index=False)
    rows.iloc[700:].drop(columns=["region"]).to_parquet(folder / "part-1.parquet", index=False)
    with pytest.raises(DataError, match="part-1.parquet has columns .* give every file of the "
                                        "spans read the same columns"):
        _run(tmp_path / "data", registry, prepared, tmp_path)
    _serving_unchanged(served_registry)


# --- Readable data that breaks the serving model's schema: the gate blocks, with a report. ---

def _flip_age(rows):
    return rows.assign(age=rows["age"].map(lambda v: f"{v:.0f} years" if v == v else None))


GATED = {
    "column type flip": (_flip_age, "age", "Unexpected data type"),
    # The missing share is a bin of the drift test: 5 % missing -> 100 %.
    "all-NaN column": (lambda rows: rows.assign(income=np.nan), "income", "Drift"),
    "new categorical values": (
        lambda rows: rows.assign(plan=rows["plan"].replace("basic", "basic-2027")),
        "plan", "New values"),
    "new column": (lambda rows: rows.assign(coupon=rows["plan"] + "-promo"), "coupon",
                   "New column"),
    "vanished column": (lambda rows: rows.drop(columns=["region"]), "region", "Drift"),
}


@pytest.mark.parametrize("case", GATED, ids=list(GATED))
def test_schema_breaking_data_is_blocked_with_a_report(case, registry, prepared, tmp_path,
                                                        served_registry):
    change, feature, short = GATED[case]
    checked, pushed = _run(_span(tmp_path, change(_good_rows())), registry, prepared, tmp_path)
    assert not checked.valid
    assert (feature, short) in {(a.feature, a.short) for a in checked.blocking}
    assert not pushed.pushed and pushed.reason.startswith("data validation did not pass")
    report = (tmp_path / "anomalies.md").read_text()
    assert "deployment is blocked" in report and f"`{feature}`" in report and short in report
    _serving_unchanged(served_registry)


def test_clean_span_passes_the_same_path(prepared, tmp_path):
    # The control: the same steps on good data do push, so the cases above fail for their data.
    # It pushes, so on a registry of its own, not the served one.
    registry = LocalRegistry(tmp_path / "registry", "churn")
    registry.push(prepared.model_dir, prepared.schema, {"span": 1}, expected_serving=None)
    checked, pushed = _run(_span(tmp_path, _good_rows()), registry, prepared, tmp_path)
    assert checked.valid and pushed.pushed and pushed.version == 2
