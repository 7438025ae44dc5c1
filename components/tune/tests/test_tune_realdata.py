"""tune on a public data set with a sensitive attribute (modeldata's IBM HR attrition, its Gender
column held out of training as the fairness settings hold it out): the search records every
trial and chooses hyperparameters at least as good as the configured ones on the validation
split, and a retrain with them measures the same."""

import pandas as pd

from ctloop import tuning
from ctloop.components.tune import logic
from ctloop.settings import Hyperparameters
from realdata import datasets, suite

SPACE = {"learning_rate": {"low": 0.0003, "high": 0.03, "log": True},
         "hidden_units": {"choices": [[64, 32], [16], [128, 64], [32]]},
         "batch_size": {"choices": [32, 64, 256]}}
SENSITIVE = "Gender"


def test_tuning_on_attrition_is_at_least_as_good_as_the_defaults_and_recorded(tmp_path):
    entry = datasets.get("attrition")
    frame = entry.load()
    assert SENSITIVE in frame.columns
    checked, (schema, _) = suite.validate(frame, entry, tmp_path, 1)
    assert checked.valid, checked.blocking
    exclude = [*entry.exclude, SENSITIVE]
    base = Hyperparameters(epochs=8)
    lines = []
    found = logic.search(str(tmp_path / "train.parquet"), schema, entry.label, exclude,
                         entry.task, None, base, SPACE, 8, 600.0, 2, 20, log=lines.append)
    assert len(found.trials) == 8 and found.stopped == "all 8 trials ran"
    assert len(lines) == 9  # the plan, then one line per trial
    configured = found.defaults
    assert configured["number"] == 0 and configured["params"] == {
        "learning_rate": 0.001, "hidden_units": [64, 32], "batch_size": 256}
    assert found.chosen["value"] >= configured["value"]
    assert found.chosen["value"] == max(t["value"] for t in found.trials)
    print(f"attrition: {found.verdict()}; {found.seconds:.1f} s, {found.workers} workers")
    # The validation rows are the train split's, never the eval split's.
    assert found.rows["fit"] + found.rows["validation"] == len(
        pd.read_parquet(tmp_path / "train.parquet"))
    # The chosen trial is reproducible: a retrain with its values measures the same.
    trials = tuning.Trials(str(tmp_path / "train.parquet"), schema, entry.label, exclude,
                           entry.task, None, 20)
    assert SENSITIVE not in [f.name for f in trials.features]
    again = trials.run(tuning.hyperparameters(base, found.chosen["params"]))
    assert again["value"] == found.chosen["value"]
