"""The ctloop CLI through click's CliRunner: outputs and one-line answers to bad input."""

import sys

import pytest
import yaml
from click.testing import CliRunner

from ctloop.cli import main
from ctloop.local import runner as local_run


def test_datagen_is_deterministic(cli, tmp_path):
    for out in ("a", "b"):
        result = cli("datagen", "--out", tmp_path / out, "--spans", 2, "--rows", 300)
        assert result.exit_code == 0, result.output
        assert result.output.split() == [str(tmp_path / out / f"span-{i}" / "data.csv")
                                         for i in (1, 2)]
    for span in ("span-1", "span-2"):
        assert (tmp_path / "a" / span / "data.csv").read_bytes() == (
            tmp_path / "b" / span / "data.csv").read_bytes()
    assert (tmp_path / "a/span-1/data.csv").read_bytes() != (
        tmp_path / "a/span-2/data.csv").read_bytes()


def test_datagen_parquet_with_drift(cli, tmp_path):
    import pandas as pd

    assert cli("datagen", "--out", tmp_path, "--spans", 1, "--rows", 2000, "--format",
               "parquet").exit_code == 0
    base = pd.read_parquet(tmp_path / "span-1/data.parquet")
    assert cli("datagen", "--out", tmp_path / "d", "--spans", 1, "--rows", 2000, "--drift", 1,
               "--format", "parquet").exit_code == 0
    drifted = pd.read_parquet(tmp_path / "d/span-1/data.parquet")
    assert drifted["monthly_charges"].mean() > base["monthly_charges"].mean() + 10
    assert base["income"].isna().mean() > 0.02 and base["region"].isna().mean() > 0.01


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["datagen", "--out", "{tmp}", "--drift", "2"], "drift 2.0 is out of range"),
        (["run", "--local", "--data", "{tmp}/none", "--label", "churned", "--workdir", "{tmp}/w"],
         "data path {tmp}/none does not exist"),
        (["run", "--local", "--data", "{data}", "--label", "nope", "--workdir", "{tmp}/w"],
         "--label 'nope' is not a column of"),
        (["run", "--local", "--data", "{data}", "--label", "churned", "--exclude", "ghost",
          "--workdir", "{tmp}/w"], "--exclude ['ghost'] not among the columns"),
        (["run", "--local", "--data", "{data}/span-{{SPAN}}/*.parquet", "--label", "churned",
          "--workdir", "{tmp}/w"], "span-{{SPAN}}/*.parquet matches no .csv or .parquet file"),
        (["run", "--local", "--data", "{data}", "--label", "churned", "--model-name", "Bad_Name",
          "--workdir", "{tmp}/w"], "model name 'Bad_Name' is invalid"),
        (["run", "--local", "--data", "{data}", "--label", "churned", "--workdir", "{tmp}/w",
          "--anomaly-policy", "NEW_COLUMN=warn"], "'NEW_COLUMN' is not an anomaly type"),
        (["run", "--local", "--data", "{data}", "--label", "churned", "--workdir", "{tmp}/w",
          "--drift-threshold", "0"], "drift threshold 0.0 is out of range"),
        (["predict", "--url", "http://127.0.0.1:9", "--data", "{data}/span-1/data.csv",
          "--requests", "0"], "is not reachable"),
    ],
)
def test_bad_input_is_one_line_error(cli, tmp_path, args, message):
    data = tmp_path / "data"
    assert cli("datagen", "--out", data, "--spans", 1, "--rows", 50).exit_code == 0
    args = [a.format(tmp=tmp_path, data=data) for a in args]
    result = cli(*args)
    assert result.exit_code == 1, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and message.format(tmp=tmp_path) in error_lines[0]
    assert "Traceback" not in result.output


def test_run_checks_s3_data_through_the_endpoint_given(cli, s3_bucket):
    s3_bucket.put("data/span-1/data.csv", b"a,churned\n1,0\n2,1\n")
    result = cli("run", "--local", "--data", f"{s3_bucket.uri}/data", "--spans", 2,
                 "--s3-endpoint-url", s3_bucket.endpoint_url, "--label", "nope", "--workdir", "w")
    assert result.exit_code == 1, result.output
    assert f"--label 'nope' is not a column of {s3_bucket.uri}/data/span-1/data.csv" in (
        result.output)
    s3_bucket.put("data/span-2/data.csv", b"a,churned\n1,0\n2,1\n3,0\n")
    result = cli("run", "--local", "--data", f"{s3_bucket.uri}/data", "--label", "a",
                 "--s3-endpoint-url", s3_bucket.endpoint_url, "--workdir", "w")
    assert result.exit_code == 1 and "--label 'a' has 3 distinct values in " in result.output
    assert cli("run", "--local", "--data", "d", "--label", "x", "--workdir", "w", "--spans",
               0).exit_code == 2


def test_run_checks_an_s3_registry_before_any_work(cli, s3_bucket, tmp_path):
    s3_bucket.put("data/span-1/data.csv", b"a,churned\n1,0\n2,1\n")
    common = ("run", "--local", "--data", f"{s3_bucket.uri}/data", "--label", "churned",
              "--s3-endpoint-url", s3_bucket.endpoint_url, "--workdir", tmp_path)
    result = cli(*common, "--registry", "s3://no-such-bucket-here/registry")
    assert result.exit_code == 1 and "Error: registry s3://no-such-bucket-here/registry/" \
        "ctloop-model/: cannot list" in result.output
    result = cli(*common, "--registry", f"{s3_bucket.uri}/registry", "--serving-url",
                 "http://127.0.0.1:8080")
    assert result.exit_code == 2 and "--serving-url needs a local --registry" in result.output


def test_run_checks_the_serving_environment(cli, tmp_path):
    result = cli("run", "--local", "--data", tmp_path, "--label", "x", "--workdir", tmp_path,
                 "--serving-python", tmp_path / "nope")
    assert result.exit_code == 2 and f"--serving-python {tmp_path / 'nope'} does not exist" in \
        result.output


def test_run_passes_hyperparameters_to_the_pipeline(cli, tmp_path, monkeypatch):
    data = tmp_path / "data"
    assert cli("datagen", "--out", data, "--spans", 1, "--rows", 50).exit_code == 0
    runs = []
    monkeypatch.setattr(local_run, "run",
                        lambda params, workdir, **_: runs.append(params) or {})
    monkeypatch.setattr(local_run, "describe", lambda summary: "ran")
    common = ("run", "--local", "--data", data, "--label", "churned", "--workdir", tmp_path / "w")
    result = cli(*common, "--epochs", 3, "--batch-size", 64, "--learning-rate", 0.01,
                 "--hidden-units", 128, "--hidden-units", 64, "--seed", 7)
    assert result.exit_code == 0, result.output
    assert {k: runs[0][k] for k in ("epochs", "batch_size", "learning_rate", "hidden_units",
                                    "seed")} == {"epochs": 3, "batch_size": 64,
                                                 "learning_rate": 0.01, "hidden_units": [128, 64],
                                                 "seed": 7}
    assert cli(*common).exit_code == 0  # flags left unset: the pipeline's defaults apply
    assert not {"epochs", "batch_size", "learning_rate", "hidden_units", "seed"} & set(runs[1])
    assert set(runs[1]) == {"data_uri", "label", "serving_python"}
    assert len(runs) == 2


def test_run_is_local_without_the_flag_which_is_still_accepted(cli, tmp_path):
    for local in ([], ["--local"]):
        result = cli("run", *local, "--data", tmp_path / "none", "--label", "x", "--workdir",
                     tmp_path)
        assert result.exit_code == 1, result.output
        assert f"data path {tmp_path / 'none'} does not exist" in result.output


@pytest.fixture
def recorded(cli, tmp_path, monkeypatch):
    """Runs `ctloop run` up to the pipeline: returns the parameters it would run with."""
    data = tmp_path / "data"
    assert cli("datagen", "--out", data, "--spans", 1, "--rows", 50).exit_code == 0
    runs = []
    monkeypatch.setattr(local_run, "run",
                        lambda params, workdir, **_: runs.append(params) or {})
    monkeypatch.setattr(local_run, "describe", lambda summary: "ran")

    def invoke(*args, runner=cli):
        result = runner(*args)
        assert result.exit_code == 0, result.output
        return runs[-1]

    invoke.data = data
    return invoke


def test_serving_environment_is_found_without_being_named(recorded, tmp_path, monkeypatch):

    from ctloop.cli import common as cli_module

    own = tmp_path / "own" / "python"
    own.parent.mkdir()
    own.write_text("")
    monkeypatch.setattr(cli_module, "project_serving_python", lambda: own)
    monkeypatch.delenv("CTLOOP_SERVING_PYTHON", raising=False)
    bare = CliRunner(env={"CTLOOP_SERVING_PYTHON": None})

    def plain(*args):
        return bare.invoke(main, [str(a) for a in args])

    common = ("run", "--data", recorded.data, "--label", "churned", "--workdir", tmp_path / "w")
    assert recorded(*common, runner=plain)["serving_python"] == str(own)
    env_python = tmp_path / "env-python"
    env_python.write_text("")
    with_env = CliRunner(env={"CTLOOP_SERVING_PYTHON": str(env_python)})
    assert recorded(*common, runner=lambda *a: with_env.invoke(main, [str(x) for x in a]))[
        "serving_python"] == str(env_python)
    assert recorded(*common, "--serving-python", sys.executable, runner=lambda *a: (
        with_env.invoke(main, [str(x) for x in a])))["serving_python"] == sys.executable
    own.unlink()
    result = plain(*common)
    assert result.exit_code == 2
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert line == (f"Error: no serving environment: {own} does not exist; create it with `make "
                    "setup`, or pass --serving-python (or CTLOOP_SERVING_PYTHON)")
    result = with_env.invoke(main, [str(a) for a in common] + ["--serving-python",
                                                               str(tmp_path / "nope")])
    assert result.exit_code == 2 and f"--serving-python {tmp_path / 'nope'} does not exist" in \
        result.output


def test_config_file_sets_the_parameters_and_flags_override_it(recorded, tmp_path):
    config = tmp_path / "ctloop.yaml"
    config.write_text(yaml.safe_dump({
        "data_uri": str(recorded.data), "label": "churned", "exclude": ["customer_id"],
        "epochs": 3, "hidden_units": [16], "learning_rate": 0.01, "min_auc": None,
        "max_auc_decrease": None, "anomaly_policy": {"CTLOOP_DRIFT": "warn"},
        "eval_percent": 30, "warm_start": True, "model_name": "churn"}))
    params = recorded("run", "-c", config, "--workdir", tmp_path / "w")
    assert {k: params[k] for k in ("data_uri", "label", "exclude", "epochs", "hidden_units",
                                   "learning_rate", "min_auc", "max_auc_decrease",
                                   "anomaly_policy", "eval_percent", "warm_start",
                                   "model_name")} == {
        "data_uri": str(recorded.data), "label": "churned", "exclude": ["customer_id"],
        "epochs": 3, "hidden_units": [16], "learning_rate": 0.01, "min_auc": -1.0,
        "max_auc_decrease": -1.0, "anomaly_policy": {"CTLOOP_DRIFT": "warn"},
        "eval_percent": 30, "warm_start": True, "model_name": "churn"}
    params = recorded("run", "-c", config, "--workdir", tmp_path / "w", "--epochs", 5,
                      "--exclude", "region", "--max-auc-decrease", 0.05, "--model-name", "m2")
    assert (params["epochs"], params["exclude"], params["max_auc_decrease"],
            params["model_name"], params["hidden_units"]) == (5, ["region"], 0.05, "m2", [16])


def test_serving_record_uri_is_a_settings_key_of_the_kserve_target(cli, recorded, tmp_path):
    """No flag (like kserve_*): a settings file's value is passed on with serving_target kserve;
    with a local target nothing would record it, so the run refuses it in one line."""
    config = tmp_path / "ctloop.yaml"
    uri = "s3://mlpipeline/ctloop/records/churn"
    config.write_text(yaml.safe_dump({
        "data_uri": str(recorded.data), "label": "churned", "serving_target": "kserve",
        "serving_record_uri": uri}))
    params = recorded("run", "-c", config, "--workdir", tmp_path / "w")
    assert (params["serving_target"], params["serving_record_uri"]) == ("kserve", uri)
    config.write_text(yaml.safe_dump({
        "data_uri": str(recorded.data), "label": "churned", "serving_record_uri": uri}))
    result = cli("run", "-c", config, "--workdir", tmp_path / "w")
    assert result.exit_code == 2 and "serving_record_uri records from the KServe predictor " \
        "(serving_target: kserve); locally start the server with `ctloop serve --record-dir " \
        "DIR` instead" in " ".join(result.output.split()), result.output


@pytest.mark.parametrize(("text", "message"), [
    ("epoch: 3", "'epoch' is not a pipeline parameter; did you mean epochs?"),
    ("data: x", "'data' is not a pipeline parameter; did you mean data_uri?"),
    ("epochs: ten", "epochs: 'ten' is not allowed: epochs is a whole number"),
    ("epochs: 2.5", "epochs: 2.5 is not allowed: epochs is a whole number"),
    ("warm_start: 1", "warm_start: 1 is not allowed: warm_start is true or false"),
    ("exclude: customer_id", "exclude: 'customer_id' is not allowed: exclude is a list of text "
                             "(write [customer_id])"),
    ("positive_label: 1", "positive_label: 1 is not allowed: positive_label is text (quote it"),
    ("epochs: 0", "epochs: 0 is not allowed: epochs 0 is invalid: use at least 1"),
    ("learning_rate: 2", "learning_rate: 2.0 is not allowed: learning_rate 2.0 is out of range: "
                         "use (0, 1)"),
    ("min_auc: 1.5", "min_auc: 1.5 is not allowed: min_auc 1.5 is out of range: use a value in "
                     "[0, 1]"),
    ("min_auc: -0.7", "min_auc: -0.7 is not allowed: min_auc -0.7 is negative: only -1.0 means "
                      "no threshold"),
    ("drift_threshold: 0", "drift_threshold: 0.0 is not allowed: drift threshold 0.0 is out of "
                           "range"),
    ("task: binaryy", "task: 'binaryy' is not allowed: task 'binaryy' is not supported: use one "
                      "of 'binary', 'multiclass', 'regression'"),
    ("canary_percent: 0", "canary_percent: 0 is not allowed: canary percent 0 is out of range"),
    ("anomaly_policy: {NEW_COLUMN: warn}", "'NEW_COLUMN' is not an anomaly type"),
    ("eval_percent: 100", "eval_percent: 100 is not allowed: eval_percent 100 is out of range: "
                          "use 1..99"),
    ("model_name: Bad_Name", "model_name: 'Bad_Name' is not allowed: model name 'Bad_Name' is "
                             "invalid"),
    ("- a\n- b", "expected a mapping of pipeline parameter: value, not a list"),
    ("epochs: [", "is not valid YAML"),
])
def test_a_bad_config_file_is_one_line_before_anything_runs(cli, tmp_path, monkeypatch, text,
                                                            message):
    monkeypatch.setattr(local_run, "run", lambda *a, **k: pytest.fail("the run started"))
    config = tmp_path / "ctloop.yaml"
    config.write_text(text if text.startswith("-") else f"data_uri: d\nlabel: y\n{text}\n")
    result = cli("run", "-c", config, "--workdir", tmp_path / "w")
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: config file {config}") and message in line, line
    assert "Traceback" not in result.output
    result = cli("run", "-c", tmp_path / "missing.yaml")
    assert result.exit_code == 1 and "cannot read it" in result.output


def test_run_help_groups_its_options(cli):
    result = cli("run", "--help")
    assert result.exit_code == 0
    sections = [line for line in result.output.splitlines() if line.endswith("options:")]
    assert sections == ["Data options:", "Model options:", "Gates options:",
                        "Serving options:", "Output options:", "Other options:"]
    gates = result.output.split("Gates options:")[1].split("Serving options:")[0]
    assert "--min-auc" in gates and "--drift-threshold" in gates and "--epochs" not in gates
    assert "--local" not in result.output  # accepted, not advertised


def test_compile_gpu_variant_with_cluster_settings(cli, tmp_path):
    result = cli("compile", "--gpu", "--output", tmp_path / "gpu.yaml", "--gpu-image",
                 "registry.example/gpu:1", "--gpu-node-selector",
                 "cloud.google.com/gke-accelerator=nvidia-l4", "--gpu-toleration",
                 "dedicated:NoExecute", "--shm-size", "8Gi")
    assert result.exit_code == 0, result.output
    spec, platform = yaml.safe_load_all((tmp_path / "gpu.yaml").read_text())
    assert spec["deploymentSpec"]["executors"]["exec-train"]["container"]["image"] == (
        "registry.example/gpu:1")
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert train["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert train["tolerations"] == [{"key": "dedicated", "operator": "Exists",
                                     "effect": "NoExecute"}]
    assert train["emptyDirMounts"][0]["sizeLimit"] == "8Gi"


@pytest.mark.parametrize(("args", "message"), [
    (["--gpu-toleration", "nvidia.com/gpu:Sometimes"], "is not KEY:EFFECT"),
    (["--gpu-node-selector", "no-value"], "is not KEY=VALUE, e.g. nvidia.com/gpu.present=true"),
    (["--shm-size", "lots"], "'lots' is not a Kubernetes quantity"),
])
def test_compile_gpu_settings_are_checked(cli, tmp_path, args, message):
    result = cli("compile", "--gpu", "--output", tmp_path / "gpu.yaml", *args)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "gpu.yaml").exists()
    result = cli("compile", "--output", tmp_path / "p.yaml", "--gpu-image", "x:1")
    assert result.exit_code == 2 and "need --gpu" in result.output


def test_compile_writes_ir(cli, tmp_path):
    result = cli("compile", "--output", tmp_path / "p.yaml")
    assert result.exit_code == 0, result.output
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    assert spec["pipelineInfo"]["name"] == "ctloop-continuous-training"
    # Every task of a local run, some inside the gates' conditions (the run's report once per
    # way a run ends: run-report, run-report-2, ...).
    tasks, dags = set(), [spec["root"]["dag"]]
    while dags:
        for name, task in dags.pop()["tasks"].items():
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                dags.append(component["dag"])
            else:
                tasks.add(name.rstrip("-0123456789") if name.startswith("run-report") else name)
    # The search adds its cluster tasks: tune_plan, a tune_trial per trial, tune's skip branch;
    # the exit handler its task, which reports a failed run.
    assert tasks == {*local_run.TASKS, "tune-plan", "tune-trial", "tune-2", "notify-failure"}
