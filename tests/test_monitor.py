"""Monitoring the served model: the server's request sink, `ctloop monitor` on generated traffic
through a real server, and the drift trigger (one run per drift episode)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ctloop.cli import main
from ctloop.data import datagen
from ctloop.monitor import measure, trigger
from ctloop.monitor import records as served
from ctloop.monitor import report as monitor_report
from ctloop.registry import LocalRegistry, Registry
from ctloop.serving import client
from ctloop.serving import process as server_process

ROWS_PER_REQUEST = 20
WINDOW = served.Window(rows=500)


def _wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_window_parses_rows_and_durations():
    assert served.Window.parse("2000") == served.Window(rows=2000)
    assert served.Window.parse("30m") == served.Window(seconds=1800)
    from ctloop.errors import ConfigError

    with pytest.raises(ConfigError, match="'2 weeks'"):
        served.Window.parse("2 weeks")


def test_read_records_reads_back_only_as_far_as_two_windows_need(tmp_path):
    import os

    for i, (version, rows) in enumerate([("1", 3), ("2", 3), ("2", 2), ("2", 2)]):
        stamp = 1000.0 + i * 100
        lines = [json.dumps({"id": f"f{i}r{j}", "time": stamp + j, "version": version,
                             "latency_ms": 1.0, "inputs": {"age": [30.0]}, "outputs": [0.5]})
                 for j in range(rows)]
        path = tmp_path / f"requests-{i}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        os.utime(path, (stamp + rows, stamp + rows))  # last written after its last record
    everything = served.read_records(tmp_path)
    assert len(everything) == 10 and everything[served.TIME].is_monotonic_increasing
    # 2 windows of 2 rows of version 2: the two newest files hold them; the others are not read.
    needed = served.read_records(tmp_path, served.Window(rows=2), "2")
    assert sorted(needed[served.ID].str[:2].unique()) == ["f2", "f3"]
    # 3 rows a window: the third file back is read too, not the first (version 1's).
    assert sorted(served.read_records(tmp_path, served.Window(rows=3), "2")[served.ID]
                  .str[:2].unique()) == ["f1", "f2", "f3"]
    # A duration: the files reaching into the latest 2 x 100 s.
    recent = served.read_records(tmp_path, served.Window(seconds=100), "2")
    assert sorted(recent[served.ID].str[:2].unique()) == ["f1", "f2", "f3"]


def test_skew_reference_is_compared_at_the_servers_float32_precision():
    import numpy as np

    from ctloop import drift

    # A column of decimal values, 0.1 filling its lower deciles; served as float32 it is the
    # same distribution.
    rng = np.random.default_rng(0)
    train = pd.Series(np.where(rng.random(5000) < 0.5, 0.1, rng.uniform(0.2, 99.99, 5000)))
    train[:200] = 99.99  # the maximum, often
    served = pd.Series(train.sample(1000, random_state=1).to_numpy(np.float32).astype(float))
    reference = drift.profile(train, drift.NUMERIC)
    raw = drift.measure("x", drift.SKEW, reference, served, len(served), 0.03)
    fixed = drift.measure("x", drift.SKEW, measure.as_served(reference), served, len(served), 0.03)
    assert raw.value > 0.1  # at float64 every served 0.1 leaves its bin
    assert fixed.value < 0.01 and fixed.new_share == 0.0


# -- a real server under generated traffic ------------------------------------------------------


@contextlib.contextmanager
def _serve_recording(serving_python: str, registry: Registry, record_dir: Path):
    """`ctloop serve --registry --record-dir` from the serving environment."""
    with server_process.serve(serving_python, registry.model_name, registry=str(registry.root),
                              log_path=str(record_dir.parent / "server.log"),
                              extra_args=["--record-dir", str(record_dir)]) as server:
        server.wait_ready(registry.model_name, 120)
        yield server


def _traffic(span: int, rows: int, drift: float) -> pd.DataFrame:
    return datagen.generate_span(datagen.SpanSpec(span, rows=rows, drift=drift))


def _send(url: str, frame: pd.DataFrame, features: list[str]) -> list[str]:
    """Sends ``frame``'s feature columns in requests of ROWS_PER_REQUEST rows; returns the
    request ids the answers carry."""
    rows = json.loads(frame[features].to_json(orient="records"))
    ids = []
    for start in range(0, len(rows), ROWS_PER_REQUEST):
        answer = client.predict_raw(url, "churn", rows[start:start + ROWS_PER_REQUEST])
        assert answer["model_version"] == "1"
        ids.append(answer["request_id"])
    return ids


@pytest.fixture(scope="module")
def monitored(prepared, serving_python, tmp_path_factory):
    """A registry serving ``prepared``'s model (span 1, its statistics stored), and a server
    recording every request."""
    work = tmp_path_factory.mktemp("monitored")
    registry = LocalRegistry(work / "registry", "churn")
    registry.push(prepared.model_dir, prepared.schema, {"span": 1}, expected_serving=None)
    registry.save_statistics(1, prepared.train.parent / "stats" / "train.stats.tfrecord")
    records = work / "records"
    with _serve_recording(serving_python, registry, records) as server:
        yield registry, server, records


def _served_rows(records: Path) -> int:
    return len(served.read_records(records))


@pytest.mark.serving
def test_monitor_no_drift_then_shift_triggers_one_run(monitored, prepared, tmp_path):
    registry, server, records = monitored
    features = [f.name for f in prepared.features]
    state, marker = tmp_path / "state.json", tmp_path / "runs.txt"
    # The "CT run": appends a line, so the lines count the runs started.
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('run\\n')"]

    _send(server.url, _traffic(7, 1200, 0.0), features)
    _wait_for(lambda: _served_rows(records) == 1200)
    clean = measure.monitor(records, registry.root, "churn", WINDOW)
    assert (clean.rows, clean.previous_rows, clean.version, clean.span) == (500, 500, 1, 1)
    assert not clean.drifted, monitor_report.markdown(clean)
    assert {m.kind for m in clean.measurements} == {"skew", "drift"}
    fired = trigger.trigger(clean, state, command, cooldown_s=3600)
    assert not fired.started and not marker.exists()

    shifted = _traffic(8, 1200, 0.8)
    ids = _send(server.url, shifted, features)
    _wait_for(lambda: _served_rows(records) == 2400)
    # Labels come back for the shifted requests' first rows.
    labels = pd.DataFrame({"request_id": ids,
                           "label": shifted[datagen.LABEL].iloc[::ROWS_PER_REQUEST].to_list()})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    added = CliRunner().invoke(main, ["feedback", "--records", str(records),
                                      "--labels", str(tmp_path / "labels.csv")])
    assert added.exit_code == 0, added.output

    for _ in range(2):  # a second pass in the same drift episode starts nothing
        result = measure.monitor(records, registry.root, "churn", WINDOW)
        assert result.drifted
        assert {"age", "income", "plan", "monthly_charges"} <= set(result.features)
        trigger.trigger(result, state, command, cooldown_s=0)
    assert marker.read_text() == "run\n"
    assert result.live_metric[0] == "auc" and result.live_metric[2] == 25
    assert 0.5 < result.live_metric[1] <= 1.0
    assert 0 < result.prediction_mean < 1 and result.prediction_mean != clean.prediction_mean

    # The CLI writes the report, the decision and the metrics.
    out = tmp_path / "out"
    ran = CliRunner().invoke(main, ["monitor", "--records", str(records), "--registry",
                                    str(registry.root), "--model-name", "churn", "--window",
                                    "500", "--out", str(out), "--prom-file",
                                    str(tmp_path / "textfile" / "ctloop.prom")])
    assert ran.exit_code == 0, ran.output
    assert "drift in" in ran.output and "age" in ran.output
    decision = json.loads((out / "decision.json").read_text())
    assert decision["drift"] and "plan" in decision["features"]
    report = (out / "report.md").read_text()
    assert "**drift**" in report and "`monthly_charges`" in report and "live auc" in report
    prom = (tmp_path / "textfile" / "ctloop.prom").read_text()
    assert 'ctloop_monitor_drift{model="churn",version="1"} 1' in prom
    assert 'feature="age",kind="skew"' in prom and "ctloop_monitor_live_metric" in prom

    # --trigger run starts `ctloop run` with the arguments after --, once per episode, whatever
    # --out each pass writes to (`run --help`: a real invocation that ends at once).
    started = []
    for name in ("pass-1", "pass-2"):
        ran = CliRunner().invoke(main, ["monitor", "--records", str(records), "--registry",
                                        str(registry.root), "--model-name", "churn", "--window",
                                        "500", "--out", str(tmp_path / name), "--trigger", "run",
                                        "--", "--help"])
        assert ran.exit_code == 0, ran.output
        decision = json.loads((tmp_path / name / "decision.json").read_text())
        started.append((decision["trigger"]["started"], decision["trigger"]["exit_code"]))
    assert started == [(True, 0), (False, None)]
    assert (records / "monitor" / "trigger-state.json").is_file()


@pytest.mark.serving
def test_server_records_under_the_clients_request_id_and_counts_on_metrics(monitored, prepared):
    import urllib.request

    _, server, records = monitored
    row = json.loads(pd.read_parquet(prepared.eval).head(1)[
        [f.name for f in prepared.features]].to_json(orient="records"))
    request = urllib.request.Request(
        f"{server.url}/v1/models/churn:predict", json.dumps({"instances": row}).encode(),
        {"Content-Type": "application/json", "x-request-id": "client-id-1"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.loads(answer.read())["request_id"] == "client-id-1"
    _wait_for(lambda: "client-id-1" in set(served.read_records(records)[served.ID]))
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    assert "ctloop_records_written_total" in text and "ctloop_records_dropped_total 0.0" in text


def _result(drifted: bool, version: int = 1, rows: int = 500) -> measure.Result:
    from ctloop import drift

    m = drift.Measurement("age", drift.SKEW, 0.2 if drifted else 0.001, 0.03, p_value=1e-9
                          if drifted else 0.5, alpha=0.001)
    return measure.Result("churn", version, 1, "500 rows", rows, 500, 0, [m], 0.3, 0.3, {}, None,
                          [] if rows >= 200 else ["too few rows: ..."])


def test_trigger_one_run_per_episode_and_a_cooldown(tmp_path):
    state, marker = tmp_path / "state.json", tmp_path / "runs.txt"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('run\\n')"]
    runs = lambda: len(marker.read_text().splitlines()) if marker.exists() else 0  # noqa: E731

    assert trigger.trigger(_result(True), state, command, 3600, now=0).started
    assert not trigger.trigger(_result(True), state, command, 3600, now=10).started
    assert not trigger.trigger(_result(True, rows=50), state, command, 3600, now=20).started
    # Too few rows decide nothing: the episode is still open.
    assert not trigger.trigger(_result(True), state, command, 3600, now=30).started
    assert not trigger.trigger(_result(False), state, command, 3600, now=40).started
    # A new episode within the cool-down starts nothing; after it, one run.
    fired = trigger.trigger(_result(True), state, command, 3600, now=100)
    assert not fired.started and "cool-down" in fired.reason
    assert trigger.trigger(_result(True), state, command, 3600, now=4000).started
    # A new serving version drifting is a new episode.
    assert trigger.trigger(_result(True, version=2), state, command, 0, now=4001).started
    assert runs() == 3
    assert json.loads(state.read_text())["last_run"]["exit_code"] == 0
