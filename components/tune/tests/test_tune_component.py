"""The tune component's KFP function: off and after a failed gate it skips; given a fan-out's
results it picks among them and writes its outputs."""

import json

from kfp.dsl import HTML, Artifact, Dataset, Metrics

from conftest import EXCLUDE, LABEL
from ctloop import contract, tuning
from ctloop.components.tune.component import tune
from ctloop.settings import Hyperparameters

SPACE = {"learning_rate": {"low": 0.0005, "high": 0.05, "log": True}}


def _call(tmp_path, prepared=None, **given):
    outputs = dict(best=Artifact(uri=str(tmp_path / "best")),
                   history=Dataset(uri=str(tmp_path / "history")),
                   report=HTML(uri=str(tmp_path / "report.html")),
                   metrics=Metrics(uri=str(tmp_path / "metrics")))
    anomalies = Artifact(uri=str(tmp_path / "anomalies"))
    anomalies.metadata["summary"] = "1 blocking anomaly: plan (Drift)"
    data = prepared.train if prepared else tmp_path / "missing.parquet"
    schema = prepared.schema.parent if prepared else tmp_path / "schema"
    arguments = dict(
        train_data=Dataset(uri=str(data)), schema=Artifact(uri=str(schema)), anomalies=anomalies,
        data_valid=True, label=LABEL, task=contract.BINARY, trials=3, timeout_s=600.0,
        parallelism=1, validation_percent=20, space=SPACE, epochs=2,
        batch_size=Hyperparameters.batch_size, learning_rate=Hyperparameters.learning_rate,
        hidden_units=list(Hyperparameters.hidden_units), seed=Hyperparameters.seed,
        early_stopping_patience=0, exclude=EXCLUDE, **outputs)
    tune.python_func(**{**arguments, **given})
    return outputs


def test_off_or_after_a_failed_gate_it_skips_and_says_why(tmp_path):
    off = _call(tmp_path / "off", trials=0)
    assert off["best"].metadata == {
        "tuned": False, "skipped": "tuning off (tune_trials 0): the configured hyperparameters "
        "train"}
    assert "No search" in (tmp_path / "off" / "report.html").read_text()
    blocked = _call(tmp_path / "blocked", data_valid=False)
    assert blocked["best"].metadata["skipped"] == (
        "data validation blocked: 1 blocking anomaly: plan (Drift)")


def test_given_a_fan_outs_results_it_picks_and_records(tmp_path):
    planned = tuning.plan(SPACE, Hyperparameters(epochs=2), contract.BINARY, 3)
    results = [{**p, "value": [0.8, 0.82, 0.79][p["number"]], "epochs_run": 2, "seconds": 1.5,
                "rows": {"fit": 100.0, "validation": 25.0}} for p in planned]
    outputs = _call(tmp_path, results=results, started=0.0)
    best = json.loads((tmp_path / "best" / tuning.BEST_FILE).read_text())
    assert best["trial"] == 1 and best["value"] == 0.82 and best["configured_value"] == 0.8
    assert best["hyperparameters"]["learning_rate"] == planned[1]["params"]["learning_rate"]
    assert outputs["best"].metadata["tuned"] is True
    assert outputs["metrics"].metadata["best"] == 0.82
    assert outputs["metrics"].metadata["seconds_per_trial"] == 1.5
    assert (tmp_path / "history" / "trials.csv").read_text().count("\n") == 4


def test_locally_it_runs_the_search(prepared, tmp_path):
    outputs = _call(tmp_path, prepared)
    best = json.loads((tmp_path / "best" / tuning.BEST_FILE).read_text())
    assert best["trials"] == 3 and outputs["metrics"].metadata["trials"] == 3
    assert outputs["best"].metadata["verdict"] == best["verdict"]
