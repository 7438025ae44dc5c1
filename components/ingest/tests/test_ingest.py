"""ingest logic, in-process: span selection, stable split, fingerprint, bad input."""

import pandas as pd
import pytest

from ctloop import datagen
from ctloop.components.ingest import logic
from ctloop.errors import ConfigError, DataError

LABEL, EXCLUDE = datagen.LABEL, [datagen.ID_COLUMN]


def _run(data, tmp_path, label=LABEL, exclude=EXCLUDE, eval_percent=20):
    return logic.run(str(data), label, exclude, eval_percent, str(tmp_path / "train.parquet"),
                     str(tmp_path / "eval.parquet"))


def test_latest_span_is_split_deterministically(spans_dir, tmp_path):
    result = _run(spans_dir, tmp_path)
    assert result.span == 3
    assert result.files == [str(spans_dir / "span-3" / "data.csv")]
    train, evaluation = pd.read_parquet(tmp_path / "train.parquet"), pd.read_parquet(
        tmp_path / "eval.parquet")
    assert len(train) + len(evaluation) == 3000
    assert 0.15 < len(evaluation) / 3000 < 0.25
    assert set(train[LABEL].unique()) == {0, 1}
    assert not set(train[datagen.ID_COLUMN]) & set(evaluation[datagen.ID_COLUMN])

    (tmp_path / "again").mkdir()
    again = _run(spans_dir, tmp_path / "again")
    assert again.fingerprint == result.fingerprint
    assert pd.read_parquet(tmp_path / "again" / "eval.parquet").equals(evaluation)


def test_split_does_not_depend_on_row_order(tmp_path):
    frame = datagen.generate_span(datagen.SpanSpec(1, rows=500))
    _, eval_a = logic.split(frame, 20)
    _, eval_b = logic.split(frame.sample(frac=1.0, random_state=0), 20)
    assert set(eval_a[datagen.ID_COLUMN]) == set(eval_b[datagen.ID_COLUMN])


def test_fingerprint_changes_with_one_byte(tmp_path):
    datagen.write_spans(tmp_path / "d", 1, rows=200)
    first = _run(tmp_path / "d", tmp_path).fingerprint
    path = tmp_path / "d" / "span-1" / "data.csv"
    text = path.read_text()
    path.write_text(text.replace("basic", "basiC", 1))
    assert _run(tmp_path / "d", tmp_path).fingerprint != first


def test_parquet_and_string_labels(tmp_path):
    frame = datagen.generate_span(datagen.SpanSpec(1, rows=400))
    frame["outcome"] = frame[LABEL].map({0: "stayed", 1: "left"})
    frame.drop(columns=[LABEL]).to_parquet(tmp_path / "rows.parquet", index=False)
    result = _run(tmp_path / "rows.parquet", tmp_path, label="outcome")
    assert result.span == 0
    assert result.label_classes == ["left", "stayed"]
    train = pd.read_parquet(tmp_path / "train.parquet")
    assert set(train["outcome"].unique()) == {0, 1}


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, DataError, "does not exist"),
        ("", DataError, "is empty"),
        ("a,b,churned\n", DataError, "header but no rows"),
        ("a,b,target\n1,x,0\n2,y,1\n", DataError, "label column 'churned' is not in the data"),
        ("a,b,churned\n1,x,0\n2,y,0\n", DataError, "has 1 distinct values"),
        ("a,b,churned\n1,x,0\n2,y,\n", DataError, "missing values"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, content, error, message):
    path = tmp_path / "rows.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=message) as caught:
        _run(path, tmp_path, exclude=[])
    assert "\n" not in str(caught.value)


def test_unknown_excluded_column(spans_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"excluded columns \['nope'\]"):
        _run(spans_dir, tmp_path, exclude=["nope"])


def test_eval_percent_out_of_range(spans_dir, tmp_path):
    with pytest.raises(ConfigError, match="eval_percent 0"):
        _run(spans_dir, tmp_path, eval_percent=0)
