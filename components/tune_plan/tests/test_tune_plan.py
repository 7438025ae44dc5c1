"""tune_plan's KFP function: the trials of a fan-out, seeded, trial 0 the configured values."""

import time

from ctloop import contract
from ctloop.components.tune_plan.component import tune_plan

SPACE = {"learning_rate": {"low": 0.0005, "high": 0.05, "log": True},
         "hidden_units": {"choices": [[64, 32], [16]]}}


def _plan(**given):
    arguments = dict(task=contract.BINARY, trials=4, space=SPACE, epochs=3, batch_size=256,
                     learning_rate=0.001, hidden_units=[64.0, 32.0], seed=42,
                     early_stopping_patience=0)
    return tune_plan.python_func(**{**arguments, **given})


def test_it_plans_every_trial_seeded_with_the_configured_first():
    before = time.time()
    planned, started = _plan()
    assert before <= started <= time.time()
    assert [t["number"] for t in planned] == [0, 1, 2, 3]
    assert planned[0] == {"number": 0, "defaults": True,
                          "params": {"learning_rate": 0.001, "hidden_units": [64, 32]}}
    assert planned == _plan()[0]
    assert _plan(seed=7)[0][1:] != planned[1:]
