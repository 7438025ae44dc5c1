"""ingest: reads select_span's files (local, S3), checks their fingerprint, splits stably;
the component's metadata; select_span -> ingest under kfp.local against an S3 server."""

import io
import json

import pandas as pd
import pytest
from kfp.dsl import Dataset

from conftest import S3_TEST_SECRET
from ctloop.components.ingest import logic
from ctloop.components.ingest.component import ingest
from ctloop.components.select_span import logic as select_span
from ctloop.data import datagen
from ctloop.errors import ConfigError, DataChangedError, DataError
from ctloop.settings import EVAL_PERCENT

LABEL, EXCLUDE = datagen.LABEL, [datagen.ID_COLUMN]


def _run(data, tmp_path, label=LABEL, exclude=EXCLUDE, eval_percent=20, spans=1):
    selected = select_span.run(str(data), spans)
    return logic.run(selected.files, selected.fingerprint, selected.spans, label, exclude,
                     eval_percent, str(tmp_path / "train.parquet"), str(tmp_path / "eval.parquet"))


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


def test_parquet_and_string_labels(tmp_path):
    frame = datagen.generate_span(datagen.SpanSpec(1, rows=400))
    frame["outcome"] = frame[LABEL].map({0: "stayed", 1: "left"})
    frame.drop(columns=[LABEL]).to_parquet(tmp_path / "rows.parquet", index=False)
    result = _run(tmp_path / "rows.parquet", tmp_path, label="outcome")
    assert result.span == 0
    assert result.label_classes == ["left", "stayed"]
    train = pd.read_parquet(tmp_path / "train.parquet")
    assert set(train["outcome"].unique()) == {0, 1}


def test_positive_label_names_the_positive_class():
    frame = pd.DataFrame({"outcome": ["stayed", "left", "left"], "churned": [0, 1, 1]})
    encoded, classes = logic.encode_label(frame, "outcome", positive_label="left")
    assert classes == ["stayed", "left"] and encoded.tolist() == [0, 1, 1]
    # Compared as text, so a number's label is named as it is written.
    encoded, classes = logic.encode_label(frame, "churned", positive_label="0")
    assert classes == ["1", "0"] and encoded.tolist() == [1, 0, 0]
    with pytest.raises(ConfigError, match=r"positive label 'churn' is not a value of label "
                                          r"column 'outcome' \(values: \['left', 'stayed'\]\)"):
        logic.encode_label(frame, "outcome", positive_label="churn")


def test_multiclass_label_is_the_index_of_its_sorted_class():
    frame = pd.DataFrame({"plan": ["standard", "basic", "premium", "basic"]})
    encoded, classes = logic.encode_label(frame, "plan", "multiclass")
    assert classes == ["basic", "premium", "standard"]
    assert encoded.tolist() == [2, 0, 1, 0] and encoded.dtype == "int64"
    # Numbers sort as numbers, then are named as written.
    encoded, classes = logic.encode_label(pd.DataFrame({"grade": [10, 9, 2]}), "grade",
                                          "multiclass")
    assert classes == ["2", "9", "10"] and encoded.tolist() == [2, 1, 0]


def test_regression_label_is_its_number():
    frame = pd.DataFrame({"spend": ["12.5", 3, 7.25]})
    encoded, classes = logic.encode_label(frame, "spend", "regression")
    assert classes == [] and encoded.tolist() == [12.5, 3.0, 7.25]


@pytest.mark.parametrize(
    ("frame", "task", "positive", "error", "message"),
    [
        ({"y": ["a", "b", "c"]}, "binary", None, DataError,
         r"label column 'y' has 3 distinct values \['a', 'b', 'c'\]; a binary task needs exactly "
         r"2 \(use task 'multiclass' or 'regression' for more\)"),
        ({"y": ["a"] * 3}, "multiclass", None, DataError,
         r"label column 'y' has 1 distinct values \['a'\]; a multiclass task needs 2 to 1000"),
        ({"y": ["1.5", "n/a", "2"]}, "regression", None, DataError,
         r"label column 'y' has 1 non-numeric values such as 'n/a'; a regression task needs "
         r"numbers"),
        ({"y": ["a", "b", "c"]}, "multiclass", "a", ConfigError,
         r"positive label 'a' applies to a binary task, not 'multiclass'; leave it empty"),
    ],
    ids=["binary-three-values", "multiclass-one-value", "regression-text", "multiclass-positive"],
)
def test_labels_that_do_not_fit_the_task(frame, task, positive, error, message):
    with pytest.raises(error, match=message):
        logic.encode_label(pd.DataFrame(frame), "y", task, positive)


def test_many_values_are_not_a_multiclass_label():
    frame = pd.DataFrame({"id": [f"row-{i}" for i in range(logic.MAX_CLASSES + 1)]})
    with pytest.raises(DataError, match=r"has 1001 distinct values .*\(for a numeric target use "
                                        r"task 'regression'"):
        logic.encode_label(frame, "id", "multiclass")


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


def test_rolling_range_concatenates_spans_and_records_them(spans_dir, tmp_path):
    selected = select_span.run(str(spans_dir), spans=2)
    train_data = Dataset(uri=str(tmp_path / "train"))
    eval_data = Dataset(uri=str(tmp_path / "eval"))
    ingest.python_func(files=selected.files, fingerprint=selected.fingerprint,
                       spans_read=selected.spans, label=LABEL, train_data=train_data,
                       eval_data=eval_data, exclude=EXCLUDE, eval_percent=EVAL_PERCENT,
                       task="binary")
    rows = pd.concat([pd.read_parquet(tmp_path / "train"), pd.read_parquet(tmp_path / "eval")])
    assert len(rows) == 6000
    assert set(rows[datagen.ID_COLUMN].str[:5]) == {"C0002", "C0003"}  # IDs carry their span
    for artifact in (train_data, eval_data):
        assert artifact.metadata["spans"] == [2, 3] and artifact.metadata["span"] == 3
        assert artifact.metadata["fingerprint"] == selected.fingerprint
        assert artifact.metadata["files"] == selected.files
    assert train_data.metadata["rows"] + eval_data.metadata["rows"] == 6000


def test_spans_with_different_columns_are_refused(tmp_path):
    for span in (1, 2):
        frame = datagen.generate_span(datagen.SpanSpec(span, rows=100))
        if span == 2:
            frame["new_column"] = 1.0
        (tmp_path / f"span-{span}").mkdir()
        frame.to_csv(tmp_path / f"span-{span}" / "data.csv", index=False)
    with pytest.raises(DataError, match="span-2/data.csv has columns .* same columns"):
        _run(tmp_path, tmp_path, spans=2)


@pytest.mark.parametrize("change", ["rewrite", "delete"])
def test_data_changed_between_select_and_ingest_is_refused(tmp_path, change):
    datagen.write_spans(tmp_path / "d", 1, rows=200)
    selected = select_span.run(str(tmp_path / "d"))
    path = tmp_path / "d" / "span-1" / "data.csv"
    if change == "rewrite":
        path.write_text(path.read_text().replace("basic", "basiC", 1))
    else:
        path.unlink()
    with pytest.raises(DataChangedError, match="the data changed while the run started; rerun"
                       ) as caught:
        logic.run(selected.files, selected.fingerprint, selected.spans, LABEL, EXCLUDE, 20,
                  str(tmp_path / "train.parquet"), str(tmp_path / "eval.parquet"))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "train.parquet").exists()


def _span_bytes(span: int, fmt: str) -> bytes:
    frame = datagen.generate_span(datagen.SpanSpec(span, rows=400))
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def test_s3_end_to_end_through_a_real_s3_server(s3_bucket, tmp_path):
    for span in (1, 2, 3):
        s3_bucket.put(f"exports/span-{span}/part-0.parquet", _span_bytes(span, "parquet"))
    pattern = f"{s3_bucket.uri}/exports/span-{{SPAN}}/part-*.parquet"
    selected = select_span.run(pattern, 2, s3_bucket.endpoint_url)
    assert selected.spans == [2, 3]
    result = logic.run(selected.files, selected.fingerprint, selected.spans, LABEL, EXCLUDE, 20,
                       str(tmp_path / "train.parquet"), str(tmp_path / "eval.parquet"),
                       s3_bucket.endpoint_url)
    assert (result.span, result.spans, result.train_rows + result.eval_rows) == (3, [2, 3], 800)
    # The same rows as read from local files land in the same splits.
    local = tmp_path / "local"
    for span in (2, 3):
        (local / f"span-{span}").mkdir(parents=True)
        (local / f"span-{span}" / "part-0.parquet").write_bytes(_span_bytes(span, "parquet"))
    (tmp_path / "l").mkdir()
    _run(local, tmp_path / "l", spans=2)
    assert pd.read_parquet(tmp_path / "eval.parquet").equals(
        pd.read_parquet(tmp_path / "l" / "eval.parquet"))

    s3_bucket.put("exports/span-3/part-0.parquet", _span_bytes(4, "parquet"))
    with pytest.raises(DataChangedError, match="rerun the pipeline"):
        logic.run(selected.files, selected.fingerprint, selected.spans, LABEL, EXCLUDE, 20,
                  str(tmp_path / "t.parquet"), str(tmp_path / "e.parquet"),
                  s3_bucket.endpoint_url)


def test_gcs_end_to_end_through_the_gcs_emulator(gcs_bucket, tmp_path):
    for span in (1, 2):
        gcs_bucket.put(f"data/span-{span}/data.csv", _span_bytes(span, "csv"))
    selected = select_span.run(f"{gcs_bucket.uri}/data")
    result = logic.run(selected.files, selected.fingerprint, selected.spans, LABEL, EXCLUDE, 20,
                       str(tmp_path / "train.parquet"), str(tmp_path / "eval.parquet"))
    assert (result.span, result.train_rows + result.eval_rows) == (2, 400)

    gcs_bucket.put("data/span-2/data.csv", _span_bytes(5, "csv"))
    with pytest.raises(DataChangedError, match="rerun the pipeline"):
        logic.run(selected.files, selected.fingerprint, selected.spans, LABEL, EXCLUDE, 20,
                  str(tmp_path / "t.parquet"), str(tmp_path / "e.parquet"))


def test_select_span_and_ingest_under_kfp_local_against_s3(s3_bucket, tmp_path, capfd, caplog):
    from kfp import dsl, local

    from ctloop.components.select_span.component import select_span as select_span_component

    for span in (1, 2, 3):
        s3_bucket.put(f"data/span-{span}/data.csv", _span_bytes(span, "csv"))

    @dsl.pipeline(name="ingest-from-s3")
    def pipeline(data_uri: str, s3_endpoint_url: str):
        selected = select_span_component(data_uri=data_uri, spans=2,
                                         s3_endpoint_url=s3_endpoint_url)
        ingest(files=selected.outputs["files"], fingerprint=selected.outputs["fingerprint"],
               spans_read=selected.outputs["spans_read"], label=LABEL, exclude=EXCLUDE,
               eval_percent=EVAL_PERCENT, task="binary", s3_endpoint_url=s3_endpoint_url)

    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    pipeline(data_uri=f"{s3_bucket.uri}/data/span-{{SPAN}}/*.csv",
             s3_endpoint_url=s3_bucket.endpoint_url)
    (run_dir,) = root.iterdir()
    selected = json.loads((run_dir / "select-span" / "executor_output.json").read_text())
    assert selected["parameterValues"]["spans_read"] == [2, 3]
    ingested = json.loads((run_dir / "ingest" / "executor_output.json").read_text())
    metadata = ingested["artifacts"]["train_data"]["artifacts"][0]["metadata"]
    assert metadata["spans"] == [2, 3] and metadata["span"] == 3
    assert metadata["fingerprint"] == selected["parameterValues"]["fingerprint"]
    assert metadata["files"] == [f"{s3_bucket.uri}/data/span-{s}/data.csv" for s in (2, 3)]
    # Credentials come from boto3's chain and go nowhere: not in any output, not in the logs.
    captured = capfd.readouterr()
    logs = captured.out + captured.err + caplog.text
    assert "ingest" in logs and S3_TEST_SECRET not in logs
    for path in root.rglob("*"):
        assert not path.is_file() or S3_TEST_SECRET.encode() not in path.read_bytes(), path
