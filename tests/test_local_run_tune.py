"""A CT run under kfp.local with the hyperparameter search on: train uses the best trial's
hyperparameters, and the version's run record says where they came from."""

import csv
import json
from pathlib import Path

import pytest

from conftest import EXCLUDE, LABEL
from ctloop import tuning
from ctloop.local import runner as local_run
from ctloop.registry import LocalRegistry

pytestmark = pytest.mark.local

SPACE = {"learning_rate": {"low": 0.0005, "high": 0.05, "log": True},
         "hidden_units": {"choices": [[64, 32], [16]]}}


def test_a_run_with_tuning_trains_with_the_best_trials_hyperparameters(spans_dir, serving_python,
                                                                      tmp_path):
    params = {"data_uri": str(spans_dir / "span-1"), "label": LABEL, "exclude": EXCLUDE,
              "model_name": "churn", "epochs": 3, "early_stopping_patience": 1,
              "serving_python": serving_python, "tune_trials": 3, "tune_space": SPACE,
              "tune_parallelism": 2, "release_stage": "production"}
    summary = local_run.run(params, tmp_path)
    assert summary["tuning"]["tuned"] is True and "tune" in summary["timings_s"]
    run_dir = Path(summary["run_dir"])
    best = json.loads((run_dir / "tune" / "best" / tuning.BEST_FILE).read_text())
    with open(run_dir / "tune" / "history" / "trials.csv") as table:
        trials = list(csv.DictReader(table))
    assert [row["trial"] for row in trials] == ["0", "1", "2"]
    assert trials[0]["configured"] == "True" and float(trials[0]["learning_rate"]) == 0.001
    values = [float(row["eval_auc"]) for row in trials]
    assert best["value"] == max(values) and best["configured_value"] == values[0]
    assert "<svg" in (run_dir / "tune" / "report").read_text()
    assert local_run.describe(summary).count("tuning: ") == 1
    # The run's page shows the search: its verdict, the values trained with, every trial.
    page = Path(summary["reports"]["run_html"]).read_text()
    assert "<h2>Hyperparameter search</h2>" in page and best["verdict"] in page
    assert page.count("<circle") == 3
    # Train used exactly the chosen values, early stopping kept; the record says where from.
    assert summary["pushed"], summary["push_reason"]
    record = LocalRegistry(tmp_path / "registry", "churn").serving().record()
    chosen = best["hyperparameters"]
    assert {k: record["parameters"][k] for k in chosen if k != "user"} == {
        k: v for k, v in chosen.items() if k != "user"}
    assert record["parameters"]["early_stopping_patience"] == 1
    assert record["parameters"]["tuning"]["from"].startswith("tune: ")
    assert record["parameters"]["tuning"]["verdict"] == best["verdict"]
