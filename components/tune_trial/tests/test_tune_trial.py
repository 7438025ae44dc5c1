"""tune_trial's KFP function on generated data: one trial measured as a local search measures it;
none once the search's budget is spent."""

import time

from kfp.dsl import Artifact, Dataset

from conftest import EXCLUDE, LABEL
from ctloop import contract, tuning
from ctloop.components.tune_trial.component import tune_trial
from ctloop.settings import Hyperparameters

SPACE = {"learning_rate": {"low": 0.0005, "high": 0.05, "log": True},
         "batch_size": {"choices": [64, 256]}}


def _trial(prepared, trial, started):
    return tune_trial.python_func(
        train_data=Dataset(uri=str(prepared.train)),
        schema=Artifact(uri=str(prepared.schema.parent)), label=LABEL, task=contract.BINARY,
        trial=trial, started=started, timeout_s=600.0, validation_percent=20, space=SPACE,
        epochs=2, batch_size=256, learning_rate=0.001, hidden_units=[64.0, 32.0], seed=42,
        early_stopping_patience=0, exclude=EXCLUDE)


def test_a_trial_measures_what_the_local_search_measures(prepared):
    # As KFP hands a planned trial over: JSON numbers as floats.
    trial = {"number": 1.0, "defaults": False,
             "params": {"learning_rate": 0.004, "batch_size": 64.0}}
    found = _trial(prepared, trial, time.time())
    assert found["number"] == 1 and found["params"] == {"learning_rate": 0.004,
                                                         "batch_size": 64}
    local = tuning.Trials(str(prepared.train), str(prepared.schema), LABEL, EXCLUDE,
                          contract.BINARY, None, 20)
    again = local.run(tuning.hyperparameters(Hyperparameters(epochs=2), found["params"]))
    assert found["value"] == again["value"] and 0.5 < found["value"] <= 1.0
    assert found["rows"] == local.rows


def test_no_trial_runs_once_the_budget_is_spent(prepared):
    trial = {"number": 2, "defaults": False, "params": {"learning_rate": 0.004}}
    assert _trial(prepared, trial, time.time() - 601)["value"] is None
