"""Bad configuration and bad models never deploy: each case ends in a one-line error naming the
input and the fix, before any work starts, or in a gate with a report; the registry keeps
serving version 1, byte for byte, and the model server following it (conftest's
``served_registry``) answers the reference rows with the same predictions and version.

The data cases are in test_bad_data.py; bad serving requests in test_serving.py, where every
test on the shared server is followed by a check that it still answers as before.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import EXCLUDE, LABEL, export_nan_model
from ctloop import contract, kserve
from ctloop.cli import main
from ctloop.components.infra_validate import logic as infra
from ctloop.components.rollout import logic as rollout
from ctloop.contract import serving_target
from ctloop.errors import ConfigError, CtloopError
from ctloop.registry import LocalRegistry, Registry


@pytest.fixture
def workdir(prepared, spans_dir, tmp_path):
    """A workdir whose registry serves version 1, and the data of span 1."""
    registry = LocalRegistry(tmp_path / "registry", "churn")
    registry.push(prepared.model_dir, prepared.schema, {"span": 1}, expected_serving=None)
    return tmp_path


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _serving_unchanged(served, before: str) -> None:
    registry = LocalRegistry(served.registry.root, "churn")
    assert registry.serving().number == 1 and [v.number for v in registry.versions()] == [1]
    assert _tree_digest(registry.serving().path) == before
    served.assert_answers_as_before()


def _run(workdir: Path, data: Path, *args) -> tuple[int, str]:
    runner = CliRunner(env={"CTLOOP_SERVING_PYTHON": sys.executable})
    result = runner.invoke(main, ["run", "--local", "--data", str(data), "--workdir",
                                  str(workdir), "--model-name", "churn",
                                  *[str(a) for a in args]])
    return result.exit_code, result.output


GOOD = ("--label", LABEL, *[a for c in EXCLUDE for a in ("--exclude", c)])

# (arguments after --data/--workdir/--model-name, fragment of the one error line)
CONFIG = {
    "unknown label column": (("--label", "churn"), "--label 'churn' is not a column of"),
    "label is an ID column": (("--label", "customer_id"),
                              "a binary task needs a 2-valued label column"),
    "label also excluded": ((*GOOD, "--exclude", LABEL),
                            f"--label '{LABEL}' is also in --exclude; remove it"),
    "unknown excluded column": (("--label", LABEL, "--exclude", "nope"),
                                "--exclude ['nope'] not among the columns"),
    "drift threshold above 1": ((*GOOD, "--drift-threshold", 1.5),
                                "drift threshold 1.5 is out of range"),
    "unknown anomaly type": ((*GOOD, "--anomaly-policy", "TYPO=warn"),
                             "anomaly policy key 'TYPO' is not an anomaly type"),
    "anomaly policy not block/warn": ((*GOOD, "--anomaly-policy", "SCHEMA_NEW_COLUMN=maybe"),
                                      "'maybe'"),
    "sample rate 0": ((*GOOD, "--stats-sample-rate", 0), "--stats-sample-rate 0.0 is out of range"),
    "zero epochs": ((*GOOD, "--epochs", 0), "epochs 0 is invalid: use at least 1"),
    "batch size 0": ((*GOOD, "--batch-size", 0), "batch_size 0 is invalid: use at least 1"),
    "learning rate 0": ((*GOOD, "--learning-rate", 0), "learning_rate 0.0 is out of range: use "
                        "(0, 1)"),
    "negative learning rate": ((*GOOD, "--learning-rate", -0.01),
                               "learning_rate -0.01 is out of range"),
    "hidden unit of 0": ((*GOOD, "--hidden-units", 64, "--hidden-units", 0),
                         "hidden_units [64, 0] is invalid: use one or more layer sizes"),
    "seed out of range": ((*GOOD, "--seed", -1), "seed -1 is out of range: use 0 to 4294967295"),
    "AUC threshold above 1": ((*GOOD, "--min-auc", 1.5), "min_auc 1.5 is out of range"),
    "negative latency SLO": ((*GOOD, "--max-p99-ms", -1), "max_p99_ms -1.0 is invalid"),
    "canary of 0 percent": ((*GOOD, "--canary-percent", 0), "canary percent 0 is out of range"),
    "unknown slice feature": ((*GOOD, "--slice-feature", "planet"),
                              "--slice-feature ['planet'] not among the data's columns"),
    "negative early-stopping patience": ((*GOOD, "--early-stopping-patience", -1),
                                         "early_stopping_patience -1 is invalid"),
    "user module that raises": ((*GOOD, "--user-module", "raising_module.py"),
                                "failed to import: RuntimeError: the user's bug; fix the module"),
    "user module without build_model": ((*GOOD, "--user-module", "empty_module.py"),
                                        "defines no build_model(features, train, hp, task)"),
    "missing user module": ((*GOOD, "--user-module", "no_such_module.py"),
                            "no_such_module.py does not exist"),
    "blank force-bless reason": ((*GOOD, "--force-bless-reason", "  "),
                                 "force_bless_reason '  ' is blank"),
    "unknown cold-start policy": ((*GOOD, "--cold-start", "hope"), "'hope' is not one of"),
    "unknown task type": ((*GOOD, "--task", "ranking"), "'ranking' is not one of 'binary', "
                          "'multiclass', 'regression'"),
    "text label for regression": (("--label", "plan", "--task", "regression"),
                                  "--label 'plan' has non-numeric values in"),
    "positive label of a multiclass task": (("--label", "plan", "--task", "multiclass",
                                             "--positive-label", "basic"),
                                            "--positive-label 'basic' applies to a binary task"),
    "negative MAE threshold": (("--label", "monthly_charges", "--task", "regression",
                                "--max-mae", -2), "max_mae -2.0 is out of range: use a value "
                               ">= 0, in the label's units"),
    "missing curated schema": ((*GOOD, "--schema", "no/such/schema.pbtxt"),
                               "--schema no/such/schema.pbtxt does not exist"),
    "registry on an unsupported store": ((*GOOD, "--registry", "gs://bucket/registry"),
                                         "registry URI 'gs://bucket/registry' is not supported"),
    "local canary on an S3 registry": ((*GOOD, "--registry", "s3://bucket/registry",
                                        "--serving-url", "http://127.0.0.1:1"),
                                       "--serving-url needs a local --registry"),
}


@pytest.mark.parametrize("case", CONFIG, ids=list(CONFIG))
def test_bad_configuration_is_one_line_before_any_work(case, workdir, spans_dir, monkeypatch,
                                                       served_registry):
    monkeypatch.chdir(workdir)  # relative paths (user modules) are the workdir's
    (workdir / "raising_module.py").write_text("raise RuntimeError(\"the user's bug\")\n")
    (workdir / "empty_module.py").write_text("X = 1\n")
    before = _tree_digest(served_registry.registry.serving().path)
    args, fragment = CONFIG[case]
    # The served registry, unless the case names its own (the last --registry wins).
    code, output = _run(workdir, spans_dir / "span-1", "--registry",
                        served_registry.registry.root, *args)
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert code in (1, 2) and len(errors) == 1 and fragment in errors[0], output
    assert "Traceback" not in output
    assert not (workdir / "pipeline_root").exists()  # refused before any task ran
    _serving_unchanged(served_registry, before)


@pytest.mark.parametrize(("name", "fragment"), [
    ("../registry", "model name '../registry' is invalid"),
    ("Churn_Model", "model name 'Churn_Model' is invalid"),
    ("a" * 64, "is invalid: use 1-63 lowercase letters"),
])
def test_names_that_would_become_paths_or_kubernetes_names_are_refused(name, fragment,
                                                                      workdir, spans_dir):
    code, output = _run(workdir, spans_dir / "span-1", *GOOD, "--model-name", name)
    assert code == 1 and fragment in output
    assert sorted(p.name for p in workdir.iterdir()) == ["registry"]  # nothing written beside it


@pytest.mark.parametrize(("build", "fragment"), [
    (lambda: serving_target("gke"), "serving target 'gke' is not supported: use one of"),
    (lambda: kserve.ServiceConfig(name="churn", namespace="../kubeflow"),
     "namespace '../kubeflow' is invalid: use a DNS-1123 label"),
    (lambda: kserve.ServiceConfig(name="churn", mode="Serverful"),
     "deployment mode 'Serverful' is not supported"),
    (lambda: kserve.storage_uri("/tmp/model"), "cannot be served by KServe: use an object-store"),
])
def test_bad_cluster_settings_are_one_line_config_errors(build, fragment):
    with pytest.raises(ConfigError) as caught:
        build()
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


# --- models that must not deploy: infra validation's gate, then rollout's --------------------


def _gate(prepared, registry: Registry, model_dir: Path, serving_python: str | None = None):
    """Infra-validates ``model_dir`` and rolls out. Without ``serving_python`` the candidate's
    server cannot start (this python has no kserve): the model must fail before it is needed."""
    slo = infra.SLO() if serving_python is None else infra.SLO(requests=40, rows=64,
                                                               concurrency=2)
    result = infra.run(str(model_dir), str(prepared.eval), slo,
                       infra.local_server(str(model_dir), "churn", serving_python or sys.executable,
                                          5 if serving_python is None else 120))
    pushed = rollout.run(str(model_dir), str(prepared.schema), True, 0, True, "AUC passed",
                         result.blessed, result.reason, 1, str(registry.root), "churn",
                         {"span": 2})
    return result, pushed


def _no_signature(prepared, target: Path) -> None:
    import tensorflow as tf

    class Bare(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def double(self, x):
            return 2 * x

    tf.saved_model.save(Bare(), str(target), signatures={})  # no serving_default
    shutil.copy(prepared.model_dir / contract.FEATURES_FILE, target)


def _no_features_file(prepared, target: Path) -> None:
    shutil.copytree(prepared.model_dir, target)
    (target / contract.FEATURES_FILE).unlink()


def _features_disagree(prepared, target: Path) -> None:
    shutil.copytree(prepared.model_dir, target)
    described = json.loads((target / contract.FEATURES_FILE).read_text())
    described["features"][0]["dtype"] = contract.CATEGORICAL
    (target / contract.FEATURES_FILE).write_text(json.dumps(described))


MODELS = {
    "SavedModel without a serving signature": (_no_signature,
                                               "has no 'serving_default' signature"),
    "no features.json": (_no_features_file, "features.json is missing"),
    "features.json disagrees with the signature": (_features_disagree,
                                                   "cannot predict in-process"),
}


@pytest.mark.parametrize("case", MODELS, ids=list(MODELS))
def test_broken_model_is_gated_with_a_report(case, prepared, tmp_path, served_registry):
    registry = served_registry.registry
    before = _tree_digest(registry.serving().path)
    build, fragment = MODELS[case]
    build(prepared, tmp_path / "candidate")
    result, pushed = _gate(prepared, registry, tmp_path / "candidate")
    assert not result.blessed and fragment in result.reason and "\n" not in result.reason
    assert "**NOT INFRA-BLESSED**" in infra.report_markdown(result, "churn")
    assert not pushed.pushed and pushed.reason.startswith("model not infra-blessed: ")
    _serving_unchanged(served_registry, before)


def test_model_answering_nan_is_gated_with_a_report(prepared, serving_python, tmp_path,
                                                    served_registry):
    """The NaN model loads and serves: only comparing the server's answers with the in-process
    ones (NaN != NaN: |diff| inf) refuses it, so this one starts a real candidate server."""
    registry = served_registry.registry
    before = _tree_digest(registry.serving().path)
    export_nan_model(prepared, tmp_path / "candidate")
    result, pushed = _gate(prepared, registry, tmp_path / "candidate", serving_python)
    assert not result.blessed and "\n" not in result.reason
    assert "served = in-process predictions: max |diff| inf over 64 rows" in result.reason
    assert "**NOT INFRA-BLESSED**" in infra.report_markdown(result, "churn")
    assert not pushed.pushed and pushed.reason.startswith("model not infra-blessed: served = ")
    _serving_unchanged(served_registry, before)


def test_every_error_is_a_ctloop_error_with_one_line(prepared, tmp_path):
    """The corpus's errors come from one hierarchy, which the CLI prints as one line."""
    with pytest.raises(CtloopError) as caught:
        LocalRegistry(tmp_path, "churn").set_serving(3)
    assert "\n" not in str(caught.value) and "choose one of" in str(caught.value)
