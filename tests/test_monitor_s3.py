"""Monitoring on an object store: the model server records to s3:// (one PUT per rotated file,
off the request path), `ctloop monitor` and the monitor component read the records from there,
and the trigger's state lives next to them. Against moto's S3 server through real boto3; the
server is a real `ctloop serve` from the serving environment."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctloop.cli import main
from ctloop.data import datagen
from ctloop.monitor import records as served
from ctloop.monitor import store
from ctloop.registry import LocalRegistry
from ctloop.serving import client
from ctloop.serving import process as server_process
from ctloop.serving.recorder import Recorder

ROWS_PER_REQUEST = 20


def _wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def _keys(bucket, prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=bucket.endpoint_url)
    name = bucket.uri.removeprefix("s3://")
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=name, Prefix=prefix)
                  .get("Contents", []))


def _columns(n: int = 1):
    import numpy as np

    return ({"age": np.full(n, 40.0, dtype=np.float32), "plan": np.array(["basic"] * n, object)},
            np.full(n, 0.25, dtype=np.float32))


def test_recorder_puts_each_rotated_file_once_and_the_reader_finds_them(s3_bucket):
    uri = f"{s3_bucket.uri}/serving/records"
    recorder = Recorder(uri, rotate_rows=3, s3_endpoint_url=s3_bucket.endpoint_url)
    columns, answers = _columns()
    for i in range(7):
        assert recorder.record(f"r{i}", "1", 1.0, columns, answers)
        time.sleep(0.02)
    recorder.close()
    keys = _keys(s3_bucket, "serving/records/")
    assert keys and all(k.startswith("serving/records/requests-") and k.endswith(".jsonl")
                        for k in keys)
    assert not list(Path(recorder.directory).glob("*.jsonl"))  # the spool is emptied
    frame = served.read_records(uri, s3_endpoint_url=s3_bucket.endpoint_url)
    assert sorted(frame[served.ID]) == [f"r{i}" for i in range(7)]
    assert frame["plan"].tolist() == ["basic"] * 7 and recorder.written == 7
    # Label feedback goes next to them (one PUT) and comes back joined by id.
    import pandas as pd

    written = served.write_labels(uri, pd.DataFrame({"request_id": ["r1"], "label": [1]}),
                                  s3_bucket.endpoint_url)
    assert written.startswith(f"{uri}/labels-")
    labels = served.read_labels(uri, s3_bucket.endpoint_url)
    assert labels.to_dict("records") == [{"id": "r1", "row": 0, "label": 1}]


def test_a_failed_upload_keeps_the_file_and_retries_it(s3_bucket, monkeypatch):
    uri = f"{s3_bucket.uri}/records"
    recorder = Recorder(uri, rotate_rows=1, s3_endpoint_url=s3_bucket.endpoint_url)
    original, calls = recorder.sink.upload, []

    def flaky(path):
        calls.append(path.name)
        return False if len(calls) == 1 else original(path)

    recorder.sink.upload = flaky
    columns, answers = _columns()
    recorder.record("a", "1", 1.0, columns, answers)
    time.sleep(0.8)
    recorder.record("b", "1", 1.0, columns, answers)
    recorder.close()
    assert calls[0] in calls[1:]  # the failed file was tried again
    assert sorted(served.read_records(uri, s3_endpoint_url=s3_bucket.endpoint_url)[served.ID]) \
        == ["a", "b"]


def test_reader_reads_only_the_objects_two_windows_need(s3_bucket, monkeypatch):
    # Objects are listed newest first by their last-modified time, as files by their mtime.
    for i in range(3):
        stamp = time.time()
        lines = [json.dumps({"id": f"f{i}r{j}", "time": stamp + j * 0.01, "version": "1",
                             "latency_ms": 1.0, "inputs": {"age": [30.0]}, "outputs": [0.5]})
                 for j in range(2)]
        s3_bucket.put(f"rec/requests-{i}.jsonl", ("\n".join(lines) + "\n").encode())
        time.sleep(2.1)  # S3 keeps last-modified times to the second
    s3_bucket.put("rec/monitor/report.md", b"not a record")
    read = []
    original = store.read_text
    monkeypatch.setattr(store, "read_text", lambda uri, endpoint=None: read.append(uri) or
                        original(uri, endpoint))
    rows = served.read_records(f"{s3_bucket.uri}/rec", served.Window(rows=1), "1",
                               s3_bucket.endpoint_url)
    assert sorted(rows[served.ID].str[:2].unique()) == ["f2"]
    assert [u.rsplit("/", 1)[-1] for u in read] == ["requests-2.jsonl"]


def test_missing_bucket_is_one_line(s3_bucket):
    from ctloop.errors import DataError

    with pytest.raises(DataError, match="cannot reach s3://no-such-bucket-x"):
        served.read_records("s3://no-such-bucket-x/rec", s3_endpoint_url=s3_bucket.endpoint_url)


# -- a real server recording to S3 ---------------------------------------------------------------


@contextlib.contextmanager
def _serve_to_s3(serving_python: str, registry, records_uri: str, endpoint: str, log: Path):
    with server_process.serve(serving_python, registry.model_name, registry=str(registry.root),
                              log_path=str(log), extra_args=[
                                  "--record-dir", records_uri, "--s3-endpoint-url", endpoint,
                                  # a file a second: what the monitor sees
                                  "--record-rotate-minutes", "0.02"]) as server:
        server.wait_ready(registry.model_name, 120)
        yield server


def _send(url: str, frame, features: list[str]) -> None:
    rows = json.loads(frame[features].to_json(orient="records"))
    for start in range(0, len(rows), ROWS_PER_REQUEST):
        assert client.predict_raw(url, "churn", rows[start:start + ROWS_PER_REQUEST])[
            "model_version"] == "1"


@pytest.mark.serving
def test_server_records_to_s3_and_monitor_and_component_read_them(
        s3_bucket, prepared, serving_python, tmp_path):
    from ctloop.components.monitor import logic
    from ctloop.components.monitor.component import monitor as monitor_component

    registry = LocalRegistry(tmp_path / "registry", "churn")
    registry.push(prepared.model_dir, prepared.schema, {"span": 1}, expected_serving=None)
    registry.save_statistics(1, prepared.train.parent / "stats" / "train.stats.tfrecord")
    records = f"{s3_bucket.uri}/serving/churn"
    endpoint = s3_bucket.endpoint_url
    features = [f.name for f in prepared.features]

    def rows() -> int:
        return len(served.read_records(records, s3_endpoint_url=endpoint))

    with _serve_to_s3(serving_python, registry, records, endpoint, tmp_path / "server.log") as srv:
        _send(srv.url, datagen.generate_span(datagen.SpanSpec(7, rows=1000)), features)
        _wait_for(lambda: rows() == 1000)
        clean = CliRunner().invoke(main, [
            "monitor", "--records", records, "--registry", str(registry.root), "--model-name",
            "churn", "--window", "500", "--s3-endpoint-url", endpoint])
        assert clean.exit_code == 0, clean.output
        assert "no drift" in clean.output
        _send(srv.url, datagen.generate_span(datagen.SpanSpec(8, rows=1000, drift=0.8)),
              features)
        _wait_for(lambda: rows() == 2000)
    # The CLI: report, decision and metrics next to the records (s3://), drift found.
    ran = CliRunner().invoke(main, [
        "monitor", "--records", records, "--registry", str(registry.root), "--model-name",
        "churn", "--window", "500", "--s3-endpoint-url", endpoint])
    assert ran.exit_code == 0, ran.output
    assert f"report: {records}/monitor/report.md" in ran.output
    decision = json.loads(store.read_text(f"{records}/monitor/decision.json", endpoint))
    assert decision["drift"] and {"age", "income"} <= set(decision["features"])
    assert "ctloop_monitor_drift" in store.read_text(f"{records}/monitor/metrics.prom", endpoint)
    assert all(k.removeprefix("serving/churn/").startswith(("requests-", "monitor/"))
               for k in _keys(s3_bucket, "serving/churn/"))

    # The monitor component, its python function on the same records: the report, the metrics,
    # decision.json, and one claimed run per episode, the state an object next to the records.
    from kfp import dsl

    def outputs(n: int):
        folder = tmp_path / f"pass-{n}"
        folder.mkdir()
        return (dsl.Markdown(name="report", uri=str(folder / "report.md")),
                dsl.Metrics(name="metrics", uri=str(folder / "metrics")),
                dsl.Artifact(name="decision", uri=str(folder / "decision")))

    passes = []
    for n in range(2):
        report, metrics, decision_artifact = outputs(n)
        out = monitor_component.python_func(
            records_uri=records, registry_uri=str(registry.root), model_name="churn",
            window="500", min_rows=200, drift_threshold=0.03, skew_threshold=0.03,
            false_alarm_rate=0.01, trigger_pipeline="ctloop-continuous-training",
            cooldown_minutes=60.0, report=report, metrics=metrics, decision=decision_artifact,
            state_uri="", s3_endpoint_url=endpoint)
        passes.append(out)
        written = json.loads((Path(decision_artifact.path) / "decision.json").read_text())
        assert written["drift"] and "age" in written["features"]
    assert [(p.drift, p.start_run) for p in passes] == [(True, True), (True, False)]
    assert passes[0].trigger_state == f"{records}/monitor/trigger-state.json"
    state = json.loads(store.read_text(passes[0].trigger_state, endpoint))
    assert state["episode"]["version"] == 1
    assert state["last_run"]["command"] == ["kfp-run", "ctloop-continuous-training"]
    assert "**drift**" in Path(report.path).read_text()
    assert metrics.metadata["drift"] == 1.0 and metrics.metadata["skew_age"] > 0.03
    assert "drift_prediction" in metrics.metadata and "prediction_mean" in metrics.metadata
    assert logic.state_uri_for(records, None) == passes[0].trigger_state
