"""The search's settings in a settings file: typed and checked before a run, one line each."""

import pytest

from ctloop import config
from ctloop.errors import ConfigError
from ctloop.settings import Tune

SPACE = {"learning_rate": {"low": 0.0001, "high": 0.01, "log": True},
         "hidden_units": {"choices": [[64, 32], [32]]}}


def test_the_search_is_off_by_default_and_its_keys_are_pipeline_parameters():
    known = config.parameters()
    assert known["tune_trials"].default == Tune.trials == 0
    assert (known["tune_timeout_s"].default, known["tune_parallelism"].default,
            known["tune_validation_percent"].default, known["tune_space"].default) == (
        Tune.timeout_s, Tune.parallelism, Tune.validation_percent, {})
    # What a cluster run gets when they are not given: the same.
    import yaml

    from ctloop.kfp import compiling

    spec = next(yaml.safe_load_all(compiling.PIPELINE_YAML.read_text()))
    compiled = spec["root"]["inputDefinitions"]["parameters"]
    assert {name: compiled[name]["defaultValue"] for name in (
        "tune_trials", "tune_timeout_s", "tune_parallelism", "tune_validation_percent",
        "tune_space")} == {"tune_trials": 0, "tune_timeout_s": Tune.timeout_s,
                           "tune_parallelism": 0, "tune_validation_percent": 20,
                           "tune_space": {}}


def test_a_search_reads_as_written():
    values = {"tune_trials": 10, "tune_timeout_s": 600, "tune_parallelism": 2,
              "tune_validation_percent": 25, "tune_space": SPACE}
    assert config.check(values, "f") == {**values, "tune_timeout_s": 600.0}


@pytest.mark.parametrize("values, says", [
    ({"tune_trials": 5}, "f: tune_trials 5 needs tune_space"),
    ({"tune_trials": -1}, "f: tune_trials: -1 is not allowed: tune_trials -1 is out of range"),
    ({"tune_timeout_s": 0}, "f: tune_timeout_s: 0.0 is not allowed"),
    ({"tune_validation_percent": 100}, "use 1..99"),
    ({"tune_space": {"learning_rate": 0.01}}, "tune_space is a mapping of hyperparameter"),
    ({"tune_space": {"seed": {"low": 1, "high": 3}}}, "tune_space seed: the seed is not tuned"),
    ({"tune_space": {"batch_size": {"choices": [0]}}}, "tune_space batch_size: batch_size 0"),
    ({"tune_trails": 5}, "did you mean tune_trials?"),
])
def test_a_wrong_search_setting_fails_in_one_line(values, says):
    with pytest.raises(ConfigError) as raised:
        config.check(values, "f")
    assert says in str(raised.value) and "\n" not in str(raised.value)
