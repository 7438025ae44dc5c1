"""Settings files: the schema from the pipeline's signature, and `ctloop config init`."""

import dataclasses
import inspect
import re

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from ctloop import config, starter
from ctloop.cli import main
from ctloop.errors import ConfigError
from ctloop.pipelines.ct_pipeline import ct_pipeline


def test_the_schema_is_the_pipelines_signature():
    signature = inspect.signature(ct_pipeline.pipeline_func).parameters
    found = config.parameters()
    assert list(found) == list(signature)
    assert (found["epochs"].kind, found["learning_rate"].kind, found["warm_start"].kind) == (
        int, float, bool)
    assert (found["hidden_units"].kind, found["hidden_units"].item) == (list, int)
    assert found["anomaly_policy"].kind is dict
    assert found["data_uri"].default is config.REQUIRED and found["epochs"].default == 10


def test_values_come_back_in_the_pipelines_types():
    assert config.check({"drift_threshold": 1, "min_auc": None, "max_mae": 2, "exclude": ["a"]},
                        "f") == {"drift_threshold": 1.0, "min_auc": -1.0, "max_mae": 2.0,
                                 "exclude": ["a"]}
    with pytest.raises(ConfigError, match=r"^f: hidden_units: \[64, 'x'\] is not allowed: "
                                          "hidden_units is a list of a whole number"):
        config.check({"hidden_units": [64, "x"]}, "f")
    with pytest.raises(ConfigError, match=r"^f: learning_rate: nan is not allowed"):
        config.check({"learning_rate": float("nan")}, "f")


def _frame(rows=40, **columns):
    return pd.DataFrame({name: make(rows) for name, make in columns.items()})


@pytest.mark.parametrize(("label", "values", "task"), [
    ("churned", lambda n: [i % 2 for i in range(n)], "binary"),
    ("Target", lambda n: ["yes" if i % 3 else "no" for i in range(n)], "binary"),
    ("species", lambda n: ["a", "b", "c", "d"] * (n // 4), "multiclass"),
    ("y", lambda n: [i % 5 for i in range(n)], "multiclass"),
    ("label", lambda n: [i * 1.5 for i in range(n)], "regression"),
    ("class", lambda n: [i % 30 for i in range(n)], "regression"),
])
def test_label_is_guessed_and_the_task_inferred(label, values, task):
    frame = _frame(**{"amount": lambda n: [float(i) for i in range(n)], label: values})
    proposal = starter.propose(frame)
    assert (proposal.label, proposal.task) == (label, task)


def test_ids_and_constants_are_proposed_for_exclusion_but_not_unique_numbers():
    frame = _frame(customer_id=lambda n: [f"c{i}" for i in range(n)],
                   row=lambda n: list(range(n)),
                   country=lambda n: ["nz"] * n,
                   amount=lambda n: [i + 0.5 for i in range(n)],
                   plan=lambda n: ["a", "b"] * (n // 2),
                   churn=lambda n: [0, 1] * (n // 2))
    proposal = starter.propose(frame)
    assert proposal.exclude == {
        "customer_id": "a different value in every row: an ID, not a feature",
        "row": "a different value in every row: an ID, not a feature",
        "country": "the same value in every row"}


def test_no_label_named_like_one_asks_for_it():
    frame = _frame(a=lambda n: [0, 1] * (n // 2), b=lambda n: [1.0] * n)
    with pytest.raises(ConfigError, match="no column is named like a label .*; pass --label, one "
                                          "of: a, b"):
        starter.propose(frame)
    assert starter.propose(frame, "a").task == "binary"
    with pytest.raises(ConfigError, match="--label 'c' is not a column"):
        starter.propose(frame, "c")


def test_config_init_writes_a_file_that_run_accepts(tmp_path, monkeypatch):
    from ctloop.data import datagen

    monkeypatch.chdir(tmp_path)
    datagen.write_spans(tmp_path / "data", 1, rows=200)
    runner = CliRunner()
    result = runner.invoke(main, ["config", "init", "--data", "data"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "wrote ctloop.yaml from data/span-1/data.csv:",
        "  label churned (guessed), task binary (label values: 0, 1)",
        "  exclude customer_id: a different value in every row: an ID, not a feature",
        "check it, then: ctloop run -c ctloop.yaml"]
    text = (tmp_path / "ctloop.yaml").read_text()
    assert yaml.safe_load(text) == {"data_uri": "data", "label": "churned", "task": "binary",
                                    "exclude": ["customer_id"], "model_name": "churned-model"}
    assert "# min_auc: null" in text  # the gates of its task, commented
    assert config.load(tmp_path / "ctloop.yaml")["exclude"] == ["customer_id"]
    # Every commented setting is a parameter with a valid value once uncommented.
    uncommented = yaml.safe_load("\n".join(
        line[2:] for line in text.splitlines() if re.match(r"# [a-z0-9_]+: ", line)))
    assert len(uncommented) >= 8 and set(uncommented) <= set(config.parameters())
    config.check(uncommented, "uncommented")

    result = runner.invoke(main, ["config", "init", "--data", "data"])
    assert result.exit_code == 2 and "ctloop.yaml exists; pass --force" in result.output
    result = runner.invoke(main, ["config", "init", "--data", "data", "--label", "plan",
                                  "--force", "-o", "plan.yaml"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "plan.yaml").read_text())["task"] == "multiclass"


# -- defaults, defined once (ctloop.settings) --------------------------------------------------

def _settings_defaults() -> dict:
    """Each pipeline parameter that is a tunable -> its value in ctloop.settings."""
    from ctloop import contract
    from ctloop import settings as s

    def off(value):  # a KFP float parameter cannot be None
        return s.NO_THRESHOLD if value is None else value

    thresholds = {name: off(value) for name, value in dataclasses.asdict(s.Thresholds()).items()}
    hp = s.Hyperparameters()
    return {
        "model_name": s.MODEL_NAME, "task": contract.BINARY, "eval_percent": s.EVAL_PERCENT,
        "spans": s.SPANS, "drift_threshold": s.DriftThresholds.drift,
        "skew_threshold": s.DriftThresholds.skew,
        "false_alarm_rate": s.DriftThresholds.false_alarm_rate,
        "stats_sample_rate": s.STATS_SAMPLE_RATE, "epochs": hp.epochs,
        "batch_size": hp.batch_size, "learning_rate": hp.learning_rate,
        "hidden_units": list(hp.hidden_units), "seed": hp.seed,
        "early_stopping_patience": hp.early_stopping_patience, **thresholds,
        "cold_start": s.Policy.cold_start, "force_bless_reason": "",
        "max_p99_ms": s.SLO.max_p99_ms, "min_rps": s.SLO.min_rps,
        "infra_startup_timeout_s": s.SLO.startup_timeout_s,
        "serving_target": s.SERVING_TARGET, "canary_percent": s.CanarySLO.percent,
        "kserve_namespace": s.KServe.namespace, "kserve_mode": s.KServe.mode,
        "kserve_service_account": s.KServe.service_account,
        "serving_record_uri": s.KServe.record_uri,
        "sensitive_features": list(s.Fairness.sensitive_features),
        "train_on_sensitive_features": s.Fairness.train_on_sensitive_features,
        **{name: off(getattr(s.Fairness, name)) for name in s.Fairness.THRESHOLDS},
        "min_group_size": s.Fairness.min_group_size,
    }


def test_the_pipelines_defaults_are_the_settings():
    found = config.parameters()
    assert {name: found[name].default for name in _settings_defaults()} == _settings_defaults()
    # What the compiled IR says a cluster run gets when a parameter is not given.
    from ctloop.kfp import compiling

    spec = next(yaml.safe_load_all(compiling.PIPELINE_YAML.read_text()))
    compiled = spec["root"]["inputDefinitions"]["parameters"]
    assert {name: compiled[name]["defaultValue"] for name in _settings_defaults()} == (
        _settings_defaults())


def test_no_component_defines_a_default_of_its_own():
    """The pipeline passes every tunable; a component's only defaults are None ("none")."""
    from ctloop.kfp import compiling

    components = compiling.all_components()
    own = {(name, param.name): param.default
           for name, component in components.items()
           for param in inspect.signature(component.python_func).parameters.values()
           if param.default is not inspect.Parameter.empty and param.default is not None}
    assert own == {}


@pytest.mark.parametrize("command", ["run", "monitor"])
def test_an_unset_flag_shows_the_pipelines_default(command):
    """`--help` shows each default; for `run` an unset flag is not passed (the pipeline's own
    default applies), and both are the settings' value."""
    defaults, found = _settings_defaults(), 0
    for option in main.commands[command].params:
        given = isinstance(option.default, (int, float, str))  # not click's "unset"
        if option.name in defaults and given and not option.multiple:
            assert option.default == defaults[option.name], option.name
            assert option.show_default, option.name
            found += 1
    assert found == (18 if command == "run" else 4)


def test_the_kserve_clients_defaults_are_the_settings():
    """ctloop.kserve keeps defaults of its own (its ServiceConfig stands alone): the same."""
    from ctloop import kserve
    from ctloop.settings import KServe

    config = kserve.ServiceConfig(name="m")
    assert (config.namespace, config.service_account, config.mode.value,
            config.record_uri or "") == (
        KServe.namespace, KServe.service_account, KServe.mode, KServe.record_uri)


@pytest.mark.parametrize("value", ["s3://mlpipeline/ctloop/records/churn", ""])
def test_a_serving_record_uri_is_an_object_store_location_or_none(value):
    assert config.check({"serving_record_uri": value}, "f") == {"serving_record_uri": value}


@pytest.mark.parametrize("value", ["records/", "minio://mlpipeline/records", "gs://b/records"])
def test_a_serving_record_uri_elsewhere_fails_in_one_line(value):
    with pytest.raises(ConfigError, match=rf"^f: serving_record_uri: '{value}' is not allowed: "
                                          r"record URI .* s3://BUCKET/PREFIX only"):
        config.check({"serving_record_uri": value}, "f")


def test_the_example_schedules_record_where_the_monitor_reads():
    """schedules.yaml: every CT run on KServe (scheduled, or started by the monitor) records to
    the monitoring schedule's records_uri, and each one's parameters pass the settings checks."""
    from pathlib import Path

    plan = yaml.safe_load((Path(__file__).resolve().parents[1] / "schedules.yaml").read_text())
    monitors = [s for s in plan["schedules"] if s.get("pipeline") == "ctloop-monitor"]
    ct_runs = [s["parameters"] for s in plan["schedules"] if "pipeline" not in s]
    ct_runs += [m["parameters"]["ct_parameters"] for m in monitors]
    (records_uri,) = {m["parameters"]["records_uri"] for m in monitors}
    assert ct_runs and all(p["serving_target"] == "kserve" for p in ct_runs)
    assert {p["serving_record_uri"] for p in ct_runs} == {records_uri}
    assert {p["s3_endpoint_url"] for p in ct_runs} == {monitors[0]["parameters"]["s3_endpoint_url"]}
    for parameters in ct_runs:
        config.check(parameters, "schedules.yaml")
