"""Fairness as pipeline parameters: off by default in the compiled IR, wired to train and
evaluate, and checked in the settings file before anything runs."""

import pytest
import yaml

from ctloop import config
from ctloop.errors import ConfigError
from ctloop.kfp import compiling

OFF = {"sensitive_features": [], "train_on_sensitive_features": False, "max_fpr_gap": -1.0,
       "max_tpr_gap": -1.0, "max_fairness_gap_increase": -1.0, "min_group_size": 30}


def _tasks(spec: dict) -> dict[str, dict]:
    """Every task of the IR at any depth (inside the gates' conditions too), by name."""
    found = {}

    def walk(dag: dict) -> None:
        for name, task in dag["tasks"].items():
            found[name] = task
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"])

    walk(spec["root"]["dag"])
    return found


def test_fairness_is_off_by_default_and_reaches_train_and_evaluate(tmp_path):
    path = tmp_path / "ct_pipeline.yaml"
    compiling.compile_pipeline(path)
    spec = next(yaml.safe_load_all(path.read_text()))
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert {name: root[name]["defaultValue"] for name in config.FAIRNESS} == OFF
    tasks = _tasks(spec)
    wired = {"train": ("sensitive_features", "train_on_sensitive_features"),
             "evaluate": ("sensitive_features", "max_fpr_gap", "max_tpr_gap",
                          "max_fairness_gap_increase", "min_group_size")}
    for task, names in wired.items():
        given = tasks[task]["inputs"]["parameters"]
        for name in names:
            # Inside a condition, a pipeline parameter arrives as its channel.
            assert given[name]["componentInputParameter"] in (name, f"pipelinechannel--{name}")


def test_a_settings_file_takes_fairness_keys():
    checked = config.check({"sensitive_features": ["Gender"], "max_fpr_gap": 0.1,
                            "max_tpr_gap": None, "min_group_size": 50}, "f")
    assert checked == {"sensitive_features": ["Gender"], "max_fpr_gap": 0.1,
                       "max_tpr_gap": -1.0, "min_group_size": 50}
    # Groups of a regression model are reported: no threshold, no problem.
    assert config.check({"task": "regression", "sensitive_features": ["Gender"]}, "f")


@pytest.mark.parametrize(("values", "message"), [
    ({"max_fpr_gap": 0.1}, "f: fairness thresholds (max_fpr_gap) are set but sensitive_features "
                           "is empty: name the columns whose groups are compared, or unset them"),
    ({"sensitive_features": ["Gender"], "max_tpr_gap": 1.5},
     "f: max_tpr_gap 1.5 is out of range: a difference of two rates; use a value in [0, 1]"),
    ({"sensitive_features": ["Gender"], "max_fairness_gap_increase": -0.2},
     "f: max_fairness_gap_increase -0.2 is negative: only -1.0 means no threshold; pass a value "
     "in [0, 1], or -1.0 to turn it off"),
    ({"task": "multiclass", "sensitive_features": ["Gender"], "max_fpr_gap": 0.1},
     "f: fairness thresholds (max_fpr_gap) judge binary models only (rates at a decision "
     "threshold), not multiclass; unset them: multiclass groups are reported, not judged"),
    ({"min_group_size": 0}, "f: min_group_size 0 is invalid: use at least 1 (default 30)"),
    ({"sensitive_features": "Gender"}, "f: sensitive_features: 'Gender' is not allowed: "
                                       "sensitive_features is a list of text (write [Gender])"),
])
def test_a_wrong_fairness_setting_fails_in_one_line(values, message):
    with pytest.raises(ConfigError) as caught:
        config.check(values, "f")
    assert str(caught.value) == message


def test_ctloop_run_passes_fairness_settings_and_refuses_a_column_not_in_the_data(
        cli, tmp_path, monkeypatch):
    """Settings-file keys (no flags): passed on to the pipeline as they are; a sensitive
    feature that is no column of the data fails before the run, in one line."""
    from ctloop.local import runner as local_run

    data = tmp_path / "data"
    assert cli("datagen", "--out", data, "--spans", 1, "--rows", 50).exit_code == 0
    runs = []
    monkeypatch.setattr(local_run, "run", lambda params, workdir, **_: runs.append(params) or {})
    monkeypatch.setattr(local_run, "describe", lambda summary: "ran")
    config = tmp_path / "ctloop.yaml"
    settings = {"data_uri": str(data), "label": "churned", "exclude": ["customer_id"],
                "sensitive_features": ["region"], "max_fpr_gap": 0.1}
    config.write_text(yaml.safe_dump(settings))
    result = cli("run", "-c", config, "--workdir", tmp_path / "w")
    assert result.exit_code == 0, result.output
    assert (runs[-1]["sensitive_features"], runs[-1]["max_fpr_gap"]) == (["region"], 0.1)
    config.write_text(yaml.safe_dump({**settings, "sensitive_features": ["gender"]}))
    result = cli("run", "-c", config, "--workdir", tmp_path / "w")
    assert result.exit_code == 2 and "sensitive_features ['gender'] not among the data's " \
        "columns (" in " ".join(result.output.split()), result.output
