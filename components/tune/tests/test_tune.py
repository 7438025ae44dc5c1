"""tune with real Optuna and TensorFlow on generated data: the space's checks, the validation
split, a real search (sequential and in worker processes), the fan-out's plan and pick."""

import csv
import json

import pandas as pd
import pytest

from conftest import EXCLUDE, LABEL
from ctloop import tuning
from ctloop.components.tune import logic, outputs
from ctloop.errors import ConfigError
from ctloop.settings import Hyperparameters

SPACE = {"learning_rate": {"low": 0.0005, "high": 0.05, "log": True},
         "hidden_units": {"choices": [[64, 32], [16], [32, 16]]},
         "batch_size": {"choices": [64, 256]}}
BASE = Hyperparameters(epochs=3)


def test_a_space_parses_into_dimensions():
    dims = {d.name: d for d in tuning.parse_space(
        {**SPACE, "epochs": {"low": 2, "high": 8, "step": 2}, "dropout": {"low": 0.0,
                                                                         "high": 0.5}})}
    assert dims["learning_rate"] == tuning.Dimension("learning_rate", "float", 0.0005, 0.05,
                                                     log=True)
    assert dims["hidden_units"].choices == ([64, 32], [16], [32, 16])
    assert (dims["epochs"].kind, dims["epochs"].step) == ("int", 2)
    assert dims["dropout"].kind == "float"  # a user module's own key
    # As KFP hands the space over: whole numbers as floats.
    kfp = {d.name: d for d in tuning.parse_space(
        {"epochs": {"low": 2.0, "high": 8.0}, "hidden_units": {"choices": [[64.0, 32.0]]},
         "batch_size": {"choices": [64.0]}, "layers": {"low": 1.0, "high": 4.0, "int": True}})}
    assert (kfp["epochs"].low, kfp["epochs"].high, kfp["epochs"].kind) == (2, 8, "int")
    assert kfp["hidden_units"].choices == ([64, 32],) and kfp["batch_size"].choices == (64,)
    assert kfp["layers"].kind == "int"


@pytest.mark.parametrize("space, says", [
    ({}, "tune_space is empty"),
    ({"seed": {"low": 1, "high": 9}}, "tune_space seed: the seed is not tuned"),
    ({"learning_rate": {"low": 0.1, "high": 0.01}}, "must be numbers with low < high"),
    ({"learning_rate": {"low": 0.001, "high": 2.0}}, "learning_rate 2.0 is out of range"),
    ({"learning_rate": {"low": 0.0, "high": 0.1, "log": True}}, "if true, low > 0"),
    ({"learning_rate": [0.01, 0.1]}, "is not a range or choices"),
    ({"learning_rate": {"low": 0.01, "high": 0.1, "scale": "log"}}, "is not a range or choices"),
    ({"epochs": {"low": 2.5, "high": 9}}, "a whole-number range needs whole low"),
    ({"layers": {"low": 1, "high": 4.5, "int": True}}, "a whole-number range needs whole low"),
    ({"epochs": {"low": 2, "high": 9, "int": False}}, "is for a user module's own keys only"),
    ({"batch_size": {"choices": []}}, "choices must be a non-empty list"),
    ({"batch_size": {"choices": [0, 64]}}, "batch_size 0 is invalid"),
    ({"hidden_units": {"low": 8, "high": 64}}, "layer sizes are lists"),
    ({"hidden_units": {"choices": [[64], "wide"]}}, "is not a list of layer sizes"),
    ({"hidden_units": {"choices": [[64], [64]]}}, "repeat a value"),
    ({"my-key": {"low": 1, "high": 2}}, "not a hyperparameter name"),
])
def test_a_bad_space_is_a_one_line_error_naming_the_key(space, says):
    with pytest.raises(ConfigError) as raised:
        tuning.parse_space(space)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_a_user_key_without_a_user_module_is_refused():
    with pytest.raises(ConfigError, match="dropout: not the trainer's hyperparameters"):
        tuning.dimensions({"dropout": {"low": 0.0, "high": 0.5}}, None)


def test_the_validation_split_is_stable_disjoint_and_not_ingests(prepared):
    frame = pd.read_parquet(prepared.train)
    fit, validation = tuning.validation_split(frame, 20)
    again = tuning.validation_split(frame, 20)[1]
    pd.testing.assert_frame_equal(validation, again)
    assert len(fit) + len(validation) == len(frame)
    assert 0.15 < len(validation) / len(frame) < 0.25  # ingest's buckets do not skew it
    ids = set(validation["customer_id"])
    assert not ids & set(fit["customer_id"])
    assert not ids & set(pd.read_parquet(prepared.eval)["customer_id"])


def _search(prepared, trials=4, parallelism=1, timeout_s=600.0, lines=None):
    return logic.search(str(prepared.train), str(prepared.schema), LABEL, EXCLUDE, "binary",
                        None, BASE, SPACE, trials, timeout_s, parallelism, 20,
                        log=(lines.append if lines is not None else print))


def test_a_search_records_its_trials_and_picks_the_best(prepared, tmp_path):
    lines = []
    found = _search(prepared, lines=lines)
    assert [t["number"] for t in found.trials] == [0, 1, 2, 3]
    first = found.trials[0]
    assert first["defaults"] and first["params"] == {
        "learning_rate": 0.001, "hidden_units": [64, 32], "batch_size": 256}
    values = [t["value"] for t in found.trials]
    assert all(0.5 < v <= 1.0 for v in values)  # validation AUC
    assert found.chosen["value"] == max(values)
    assert found.stopped == "all 4 trials ran" and found.workers == 1
    assert found.hyperparameters["epochs"] == 3 and found.hyperparameters["user"] == {}
    assert found.hyperparameters["hidden_units"] == found.chosen["params"]["hidden_units"]
    assert found.verdict().startswith("trial" if found.improved else "nothing better")
    assert len(lines) == 5 and "trial 1/4" in lines[1] and "(configured)" in lines[1]
    # Seeded: a rerun records the same trials, to the last bit.
    again = _search(prepared)
    assert [(t["params"], t["value"]) for t in again.trials] == [
        (t["params"], t["value"]) for t in found.trials]
    outputs.write(found, str(tmp_path / "best"), str(tmp_path / "history"),
                  str(tmp_path / "report.html"))
    best = json.loads((tmp_path / "best" / tuning.BEST_FILE).read_text())
    assert best["hyperparameters"] == found.hyperparameters
    assert best["configured_value"] == first["value"] and best["trial"] == found.chosen["number"]
    with open(tmp_path / "history" / logic.HISTORY_FILE) as table:
        assert len(list(csv.DictReader(table))) == 4
    page = (tmp_path / "report.html").read_text()
    assert "<svg" in page and page.count("<circle") == 4 and found.verdict() in page


def test_trials_run_in_worker_processes_with_the_same_values(prepared):
    sequential = _search(prepared, trials=2)
    parallel = _search(prepared, trials=2, parallelism=2)
    assert parallel.workers == 2
    # Each trial is seeded: the configured trial's value is the same wherever it runs.
    assert parallel.trials[0]["value"] == sequential.trials[0]["value"]
    assert parallel.trials[0]["params"] == sequential.trials[0]["params"]


def test_the_time_budget_stops_the_search(prepared):
    found = _search(prepared, trials=5, timeout_s=0.001)
    assert len(found.trials) == 1  # a batch has started before the budget is checked again
    assert found.stopped.startswith("time budget") and found.trials[0]["defaults"]
    assert not found.improved and found.verdict().startswith("nothing better")


def test_a_fan_out_plans_every_trial_and_picks_from_their_results():
    planned = tuning.plan(SPACE, BASE, "binary", 4)
    assert planned == tuning.plan(SPACE, BASE, "binary", 4)  # seeded
    assert planned[0]["defaults"] and planned[0]["params"]["learning_rate"] == 0.001
    assert len({json.dumps(p["params"], sort_keys=True) for p in planned}) == 4
    # As KFP hands them back: JSON numbers as floats.
    results = [{**p, "number": float(p["number"]), "value": 0.7 + 0.01 * p["number"],
                "params": {**p["params"], "batch_size": float(p["params"]["batch_size"]),
                           "hidden_units": [float(u) for u in p["params"]["hidden_units"]]},
                "epochs_run": 3, "seconds": 1.0} for p in planned[:3]]
    results.append({**planned[3], "value": None})
    found = logic.pick(results, SPACE, "binary", BASE, 4, 10.0, 2)
    assert found.chosen["number"] == 2 and found.improved
    assert found.chosen["params"] == planned[2]["params"]
    assert isinstance(found.hyperparameters["batch_size"], int)
    assert found.stopped == "time budget: 1 of 4 trials started too late"


def test_a_user_modules_own_hyperparameters_are_searched_and_reach_its_build_model(prepared,
                                                                                   tmp_path):
    module = tmp_path / "widths.py"
    module.write_text(
        "import keras\n"
        "from ctloop.components.train.logic import compile_model, head, preprocess\n\n\n"
        "def build_model(features, train, hp, task):\n"
        "    inputs, encoded = preprocess(features, train)\n"
        "    hidden = keras.layers.Dense(hp.user.get('width', 8), activation='relu',\n"
        "                                name='hidden')(encoded)\n"
        "    return compile_model(keras.Model(inputs, head(task, hidden)), task,\n"
        "                         hp.learning_rate)\n")
    found = logic.search(str(prepared.train), str(prepared.schema), LABEL, EXCLUDE, "binary",
                         None, Hyperparameters(epochs=1), {"width": {"low": 2, "high": 32,
                                                                     "int": True}},
                         3, 600.0, 1, 20, user_module=str(module), log=lambda line: None)
    # Trial 0 leaves the module's own default (8); the others draw whole widths.
    assert found.trials[0]["params"] == {}
    widths = [t["params"]["width"] for t in found.trials[1:]]
    assert all(isinstance(w, int) and 2 <= w <= 32 for w in widths)
    chosen = found.chosen["params"].get("width")
    assert found.hyperparameters["user"] == ({} if chosen is None else {"width": chosen})
    # What train does with the search's best: the module sees hp.user.
    outputs.write(found, str(tmp_path / "best"), str(tmp_path / "history"),
                  str(tmp_path / "report.html"))
    hp, source = tuning.tuned(Hyperparameters(epochs=1), str(tmp_path / "best"))
    assert hp.user == found.hyperparameters["user"] and source["user"] == hp.user
