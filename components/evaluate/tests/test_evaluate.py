"""evaluate with real TFMA: the blessing on cold start and against a better or worse baseline, the
no-skill check that judges when no value threshold is set, the cold-start policy, forced
blessings, the confusion matrix and ROC views, and the report."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow_model_analysis as tfma
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from conftest import EXCLUDE, LABEL, evaluate_outputs
from ctloop import contract
from ctloop.components.evaluate import logic
from ctloop.components.evaluate import report as markdown
from ctloop.components.evaluate.component import evaluate
from ctloop.components.train import logic as train
from ctloop.errors import ConfigError
from ctloop.settings import NO_THRESHOLD, Fairness, Policy, Thresholds

MODEL_NAME = "churn"
# The ROC's extreme thresholds leave no predicted negatives (or positives): TFMA's confusion
# matrices then divide 0 by 0 for rates this component does not read, and numpy says so.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")


@pytest.fixture(scope="module")
def weak_model(prepared, tmp_path_factory):
    """A deliberately worse model: one weak feature, one epoch."""
    out = tmp_path_factory.mktemp("weak")
    keep = ["region"]
    drop = [f.name for f in prepared.features if f.name not in keep] + EXCLUDE
    train.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL, drop,
              train.Hyperparameters(epochs=1), str(out / "model"))
    return out / "model"


@pytest.fixture(scope="module")
def eval_rows(prepared) -> int:
    return len(pd.read_parquet(prepared.eval))


def _evaluate(model, prepared, tmp_path, baseline=None, policy=None, **thresholds):
    return logic.run(str(model), str(prepared.eval), LABEL, str(baseline) if baseline else None,
                     logic.Thresholds(**thresholds), str(tmp_path / "tfma"),
                     slice_features=["contract"], policy=policy)


# What the pipeline passes when no flag says otherwise (its defaults, ctloop.settings').
DEFAULTS = {name: NO_THRESHOLD if value is None else value
            for name, value in dataclasses.asdict(Thresholds()).items()}
DEFAULTS["cold_start"] = Policy.cold_start
DEFAULTS.update(max_fpr_gap=NO_THRESHOLD, max_tpr_gap=NO_THRESHOLD,
                max_fairness_gap_increase=NO_THRESHOLD, min_group_size=Fairness.min_group_size)


def _baseline_artifact(baseline, tmp_path) -> Model:
    """load_baseline's model artifact: ``baseline`` as serving version 1, or a cold start."""
    artifact = Model(uri=str(baseline) if baseline else str(tmp_path / "no-baseline"))
    artifact.metadata["version"] = 1 if baseline else None
    return artifact


def _run_component(model, prepared, tmp_path, baseline=None, data_valid=True, **params):
    """evaluate's KFP function on hand-built artifacts; ``baseline`` is the run's baseline,
    serving version 1."""
    eval_data = Dataset(uri=str(prepared.eval))
    eval_data.metadata["span"] = 1
    outputs = evaluate_outputs(tmp_path)
    blessed = evaluate.python_func(
        model=Model(uri=str(model)), eval_data=eval_data, label=LABEL,
        baseline=_baseline_artifact(baseline, tmp_path), data_valid=data_valid,
        slice_features=["contract"], **outputs, **{**DEFAULTS, **params})
    return blessed, outputs


def _with_label_classes(model_dir, tmp_path, classes):
    """A copy of the model whose features.json names the label's classes, as train writes them
    from ingest's ``label_classes``."""
    copy = tmp_path / "labelled-model"
    shutil.copytree(model_dir, copy)
    features = json.loads((copy / contract.FEATURES_FILE).read_text())
    (copy / contract.FEATURES_FILE).write_text(json.dumps({**features, "label_classes": classes}))
    return copy


def _export_constant_model(model_dir, target: Path, value: float = 0.3) -> Path:
    """A SavedModel with ``model_dir``'s features, task and signature that answers the same for
    every row: ``value`` (binary, regression), or equal class probabilities (multiclass)."""
    import tensorflow as tf

    described = json.loads((Path(model_dir) / contract.FEATURES_FILE).read_text())
    task, classes = contract.read_task(model_dir)
    spec = {f["name"]: tf.TensorSpec([None], tf.float32 if f["dtype"] == contract.NUMERIC
                                     else tf.string, name=f["name"])
            for f in described["features"]}

    class Constant(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, raw):
            rows = tf.shape(raw[next(iter(spec))])[0]
            answer = (tf.fill([rows, len(classes)], 1 / len(classes))
                      if task == contract.MULTICLASS else tf.fill([rows], value))
            return {contract.OUTPUT_KEYS[task]: answer}

    model = Constant()
    tf.saved_model.save(model, str(target), signatures={"serving_default": model.serve})
    (target / contract.FEATURES_FILE).write_text(json.dumps(described))
    return target


def _assert_roc_is_a_bounded_curve(thresholds, fpr, tpr):
    assert 2 < len(thresholds) <= 101 and len(fpr) == len(tpr) == len(thresholds)
    assert thresholds == sorted(thresholds) and thresholds[0] == 0.0 and thresholds[-1] == 1.0
    assert all(0.0 <= x <= 1.0 for x in fpr + tpr)
    # A higher threshold predicts fewer positives: both rates only fall, from (1, 1) to (0, 0).
    assert fpr == sorted(fpr, reverse=True) and tpr == sorted(tpr, reverse=True)
    assert (fpr[0], tpr[0]) == (1.0, 1.0) and (fpr[-1], tpr[-1]) == (0.0, 0.0)


def test_cold_start_blesses_on_value_threshold(prepared, eval_rows, tmp_path):
    result = _evaluate(prepared.model_dir, prepared, tmp_path, min_auc=0.7)
    assert result.blessed, result.reason
    assert result.reason == result.tfma_reason == "passed AUC >= 0.7"
    assert result.tfma_blessed and not result.forced and result.force_reason is None
    assert 0.72 < result.metrics["auc"] <= 1.0
    assert result.metrics["example_count"] == eval_rows
    assert result.baseline_metrics == {} and result.diffs["overall"] == {}
    assert result.checks == [logic.Check("auc", "AUC >= 0.7", result.metrics["auc"], True)]
    assert result.no_skill is None  # a hand-set value threshold replaces the no-skill check
    assert {"contract=month-to-month", "contract=two-year"} <= set(result.slices["candidate"])
    assert tfma.load_validation_result(str(tmp_path / "tfma")).validation_ok
    # The views: TFMA's confusion matrix at 0.5 agrees with its own accuracy and precision.
    views = result.views
    assert views.categories == ["0", "1"]  # this model's features.json names no classes
    (tn, fp), (fn, tp) = views.confusion_matrix
    assert tn + fp + fn + tp == eval_rows
    assert (tn + tp) / eval_rows == pytest.approx(result.metrics["binary_accuracy"])
    assert tp / (tp + fp) == pytest.approx(result.metrics["precision"])
    _assert_roc_is_a_bounded_curve(views.thresholds, views.fpr, views.tpr)
    report = markdown.report_markdown(result, None, 1)
    assert "Baseline: none (cold start): the candidate alone" in report
    assert "| AUC >= 0.7 | auc = " in report and "| pass |" in report
    assert "## Candidate" in report and "baseline (v" not in report
    assert "## No-skill baseline" not in report


def test_cold_start_below_value_threshold(prepared, tmp_path):
    # The model beats no-skill (see the no-skill tests), but a hand-set threshold judges alone.
    result = _evaluate(prepared.model_dir, prepared, tmp_path, min_auc=0.99)
    assert not result.blessed and not result.tfma_blessed and result.no_skill is None
    assert result.reason.startswith("auc = 0.") and result.reason.endswith("fails AUC >= 0.99")
    assert "| FAIL |" in markdown.report_markdown(result, None, 1)


def test_require_baseline_blesses_nothing_on_cold_start(prepared, tmp_path):
    policy = logic.Policy(cold_start="require_baseline")
    result = _evaluate(prepared.model_dir, prepared, tmp_path, policy=policy, min_auc=0.7)
    assert not result.blessed
    # TFMA ran and its verdict is kept: the thresholds alone would have blessed it.
    assert result.tfma_blessed and result.tfma_reason == "passed AUC >= 0.7"
    assert result.reason.startswith("no serving model to compare against and cold_start is "
                                    "'require_baseline' (thresholds alone: passed AUC >= 0.7)")
    assert "force_bless_reason" in result.reason
    assert "**NOT BLESSED**: no serving model" in markdown.report_markdown(result, None, 1)


def test_better_candidate_is_blessed_against_worse_baseline(prepared, weak_model, tmp_path):
    # require_baseline changes nothing once a model serves.
    result = _evaluate(prepared.model_dir, prepared, tmp_path, baseline=weak_model,
                       policy=logic.Policy(cold_start="require_baseline"))
    assert result.blessed, result.reason
    # No min_auc: the no-skill check takes the value threshold's place, next to the change one.
    assert result.reason.startswith("passed AUC beats no-skill (a constant")
    assert result.reason.endswith(" and AUC >= serving model's AUC - 0.01")
    auc, baseline_auc = result.metrics["auc"], result.baseline_metrics["auc"]
    assert auc > baseline_auc + 0.05
    diff = result.diffs["overall"]["auc"]
    assert diff == pytest.approx(auc - baseline_auc)
    assert [c.passed for c in result.checks] == [True, True]
    assert result.checks[1].value == diff
    report = markdown.report_markdown(result, 3, 1)
    assert "**BLESSED**" in report and "Baseline: serving version 3." in report
    assert (f"| AUC >= serving model's AUC - 0.01 | auc change vs serving model = {diff:+.4f} "
            "| pass |") in report
    auc_table = report.split("## auc\n")[1].split("##")[0]
    assert "| slice | candidate | baseline (v3) | candidate − baseline |" in auc_table
    assert f"| overall | {auc:.4f} | {baseline_auc:.4f} | {diff:+.4f} |" in auc_table
    assert "| contract=month-to-month | " in auc_table
    for metric in ("example_count", "binary_accuracy", "precision", "recall"):
        assert f"## {metric}\n" in report


def test_worse_candidate_is_not_blessed(prepared, weak_model, tmp_path):
    # min_auc 0 isolates the change threshold: only "worse than serving" can fail it.
    result = _evaluate(weak_model, prepared, tmp_path, baseline=prepared.model_dir, min_auc=0.0)
    assert not result.blessed
    assert result.reason.startswith("auc change vs serving model = -0.")
    assert result.reason.endswith("fails AUC >= serving model's AUC - 0.01")
    assert [c.passed for c in result.checks] == [True, False]
    assert "| auc change vs serving model = -0." in markdown.report_markdown(result, 1, 1)


def test_no_check_at_all_never_blesses():
    # The fail-safe under the no-skill check: with nothing to check, TFMA would pass anything.
    assert logic.bless(None, [], contract.REGRESSION) == (
        False, "no threshold applies: set max_mae (and max_mae_increase) to bless regression "
        "models")


def test_only_force_blesses_a_model_without_skill(prepared, tmp_path):
    constant = _export_constant_model(prepared.model_dir, tmp_path / "constant")
    policy = logic.Policy(force_bless_reason="  INC-42: bootstrap the registry  ")
    result = _evaluate(constant, prepared, tmp_path, policy=policy, min_auc=None,
                       max_auc_decrease=None)
    assert result.blessed and result.forced
    assert result.force_reason == "INC-42: bootstrap the registry"
    assert not result.tfma_blessed and "fails AUC beats no-skill" in result.tfma_reason
    assert result.reason.startswith("FORCE-BLESSED: INC-42: bootstrap the registry (without "
                                    "force: not blessed: AUC margin over no-skill")


def test_component_outputs_blessing_metrics_and_views(prepared, eval_rows, tmp_path):
    import tensorflow as tf

    model = _with_label_classes(prepared.model_dir, tmp_path, ["stayed", "left"])
    blessed, out = _run_component(model, prepared, tmp_path)
    assert blessed is True, out["blessing"].metadata["reason"]
    assert (tmp_path / "blessing").read_text() == "BLESSED\n"
    meta = out["blessing"].metadata
    # min_auc defaults to none: the no-skill check judges, and the metadata says by how much.
    skill = meta["no_skill"]
    assert skill["no_skill"] == 0.5 and skill["passed"] is True
    assert skill["candidate"] == pytest.approx(meta["metrics"]["auc"], abs=2e-3)
    assert skill["margin"] == pytest.approx(skill["candidate"] - 0.5)
    assert 0 < skill["lower_bound"] < skill["margin"]
    assert (skill["resamples"], skill["seed"]) == (1000, 0)
    assert skill["summary"].startswith(f"beats no-skill by +{skill['margin']:.4f}, 95% lower "
                                       f"bound +{skill['lower_bound']:.4f}")
    assert meta["blessed"] and meta["reason"] == meta["tfma_reason"]
    assert meta["reason"].startswith("passed AUC beats no-skill (a constant")
    assert meta["forced"] is False and meta["force_reason"] is None
    assert meta["tfma_blessed"] is True
    assert meta["checks"] == [{"metric": "AUC margin over no-skill, 95% lower bound",
                               "threshold": f"AUC beats no-skill ({skill['predictor']}: AUC "
                               "0.5000)", "value": skill["lower_bound"], "passed": True,
                               "is_change": True, "detail": skill["summary"]}]
    assert meta["baseline_version"] is None and meta["baseline_metrics"] == {}
    assert out["metrics"].metadata == meta["metrics"]
    assert out["metrics"].metadata["example_count"] == eval_rows

    views = out["classification_metrics"].metadata
    matrix = views["confusionMatrix"]
    assert [spec["displayName"] for spec in matrix["annotationSpecs"]] == ["stayed", "left"]
    rows = [row["row"] for row in matrix["rows"]]
    assert sum(map(sum, rows)) == eval_rows
    # Rows are the actual class, columns the predicted one at 0.5: recount from the model.
    frame = pd.read_parquet(prepared.eval)
    inputs = contract.to_inputs(frame, logic.load_features(model))
    serve = tf.saved_model.load(str(model)).signatures[contract.SERVING_SIGNATURE]
    predicted = serve(**{k: tf.constant(v) for k, v in inputs.items()})["probability"]
    predicted = predicted.numpy() > 0.5
    actual = frame[LABEL].to_numpy() == 1
    assert rows == [[int(np.sum(~actual & ~predicted)), int(np.sum(~actual & predicted))],
                    [int(np.sum(actual & ~predicted)), int(np.sum(actual & predicted))]]
    roc = views["confidenceMetrics"]
    _assert_roc_is_a_bounded_curve([p["confidenceThreshold"] for p in roc],
                                   [p["falsePositiveRate"] for p in roc],
                                   [p["recall"] for p in roc])
    report = (tmp_path / "report.md").read_text()
    assert "# Model evaluation: span 1" in report and "## No-skill baseline" in report
    assert f"The candidate {skill['summary']}: pass." in report


def test_force_bless_records_tfma_verdict(prepared, weak_model, tmp_path):
    reason = "INC-7: roll forward past a known-bad serving model"
    blessed, out = _run_component(weak_model, prepared, tmp_path, baseline=prepared.model_dir,
                                  min_auc=0.0, force_bless_reason=reason)
    assert blessed is True
    assert (tmp_path / "blessing").read_text() == "BLESSED\n"
    meta = out["blessing"].metadata
    assert meta["blessed"] and meta["forced"] is True and meta["force_reason"] == reason
    assert meta["reason"].startswith(f"FORCE-BLESSED: {reason} (without force: not blessed: "
                                     "auc change vs serving model = -0.")
    # TFMA's real verdict is kept: the weak model fails the change threshold.
    assert meta["tfma_blessed"] is False
    assert meta["tfma_reason"].endswith("fails AUC >= serving model's AUC - 0.01")
    assert [c["passed"] for c in meta["checks"]] == [True, False]
    assert meta["baseline_version"] == 1
    assert meta["metrics"]["auc"] < meta["baseline_metrics"]["auc"]
    report = (tmp_path / "report.md").read_text()
    header = report.split("## Thresholds")[0]
    assert f"> **FORCE-BLESSED**: {reason}" in header
    assert f"recorded but not applied: **NOT BLESSED**: {meta['tfma_reason']}" in header
    assert f"**BLESSED**: FORCE-BLESSED: {reason}" in header


def test_unknown_cold_start_fails_before_any_work(prepared, tmp_path):
    with pytest.raises(ConfigError) as caught:
        _run_component(prepared.model_dir, prepared, tmp_path, cold_start="always")
    message = str(caught.value)
    assert message == ("cold_start 'always' is not a cold-start policy: use one of "
                       "'bless_on_thresholds', 'require_baseline'")
    assert not (tmp_path / "evaluation").exists() and not (tmp_path / "blessing").exists()


@pytest.mark.parametrize("reason", [" ", "\n\t"])
def test_blank_force_bless_reason_is_refused(reason):
    with pytest.raises(ConfigError, match="force_bless_reason .* is blank: say why"):
        logic.Policy(force_bless_reason=reason)


@pytest.mark.parametrize("reason", [None, ""])
def test_no_force_bless_reason_forces_nothing(reason):
    assert logic.Policy(force_bless_reason=reason).force_reason is None


@pytest.mark.parametrize(
    ("policy", "with_baseline", "expected"),
    [
        (logic.Policy(), False, (True, "passed AUC >= 0.7")),
        (logic.Policy("require_baseline"), True, (True, "passed AUC >= 0.7")),
        (logic.Policy("require_baseline"), False, (False, "no serving model to compare")),
        (logic.Policy("require_baseline", "bootstrap v1"), False,
         (True, "FORCE-BLESSED: bootstrap v1 (without force: not blessed: no serving model")),
    ],
)
def test_policy_decides_after_the_thresholds(policy, with_baseline, expected):
    blessed, reason = logic.decide(True, "passed AUC >= 0.7", policy, with_baseline)
    assert (blessed, reason[:len(expected[1])]) == expected


def test_thresholds_out_of_range():
    with pytest.raises(ConfigError, match="min_auc 1.5 is out of range"):
        logic.Thresholds(min_auc=1.5)
    with pytest.raises(ConfigError, match="max_auc_decrease -0.1 is out of range"):
        logic.Thresholds(max_auc_decrease=-0.1)


def _evaluate_task(data, tmp_path, model=None, baseline=None, policy=None, **thresholds):
    return logic.run(str(model or data.model_dir), str(data.eval), data.label,
                     str(baseline) if baseline else None, logic.Thresholds(**thresholds),
                     str(tmp_path / "tfma"), slice_features=["contract"], policy=policy)


@pytest.fixture(scope="module")
def weak_task_models(prepared, task_data, tmp_path_factory):
    """Per task, a deliberately worse model: the region only, one epoch."""
    out = tmp_path_factory.mktemp("weak-tasks")
    models = {}
    for task, data in task_data.items():
        drop = [f.name for f in data.result.features if f.name != "region"] + data.exclude
        train.run(str(data.train), str(data.eval), str(prepared.schema), data.label, drop,
                  train.Hyperparameters(epochs=1), str(out / task), label_classes=data.classes,
                  task=task)
        models[task] = out / task
    return models


def test_multiclass_is_judged_on_accuracy_with_a_class_by_class_matrix(task_data, tmp_path):
    data = task_data["multiclass"]
    result = _evaluate_task(data, tmp_path, min_accuracy=0.8)
    assert result.blessed and result.reason == "passed accuracy >= 0.8"
    accuracy = result.metrics["sparse_categorical_accuracy"]
    assert accuracy == pytest.approx(data.result.eval_metrics["eval_accuracy"], abs=1e-6)
    views = result.views
    assert views.categories == ["basic", "premium", "standard"] and views.thresholds == []
    matrix = np.array(views.confusion_matrix)
    assert matrix.shape == (3, 3) and matrix.sum() == result.metrics["example_count"]
    # TFMA's matrix and its accuracy count the same rows.
    assert np.trace(matrix) / matrix.sum() == pytest.approx(accuracy, abs=1e-6)
    frame = pd.read_parquet(data.eval)
    assert matrix.sum(axis=1).tolist() == np.bincount(frame["plan"], minlength=3).tolist()


def test_multiclass_against_a_baseline(task_data, weak_task_models, tmp_path):
    data, weak = task_data["multiclass"], weak_task_models["multiclass"]
    better = _evaluate_task(data, tmp_path / "better", baseline=weak, min_accuracy=0.5)
    assert better.blessed, better.reason
    assert better.checks[1].threshold == ("accuracy >= serving model's accuracy - 0.01")
    assert better.diffs["overall"]["sparse_categorical_accuracy"] > 0.2
    worse = _evaluate_task(data, tmp_path / "worse", model=weak, baseline=data.model_dir,
                           min_accuracy=0.3)
    assert not worse.blessed
    assert "sparse_categorical_accuracy change vs serving model = -0." in worse.reason
    assert "fails accuracy >= serving model's accuracy - 0.01" in worse.reason


def test_multiclass_without_a_value_threshold_is_judged_against_the_majority_class(task_data,
                                                                                   tmp_path):
    data = task_data["multiclass"]
    result = _evaluate_task(data, tmp_path)  # min_accuracy defaults to None
    labels = pd.read_parquet(data.eval)[data.label].to_numpy()
    majority = np.bincount(labels).argmax()
    skill = result.no_skill
    assert skill.predictor == f"always the majority class {data.classes[majority]!r}"
    assert skill.no_skill == pytest.approx(np.mean(labels == majority))
    assert skill.candidate == pytest.approx(result.metrics["sparse_categorical_accuracy"],
                                            abs=1e-6)
    assert result.blessed and skill.lower_bound > 0, result.reason


def test_regression_is_judged_on_mean_absolute_error(task_data, weak_task_models, tmp_path):
    data, weak = task_data["regression"], weak_task_models["regression"]
    result = _evaluate_task(data, tmp_path / "cold", max_mae=9.0)
    assert result.blessed and result.reason == "passed MAE <= 9.0"
    assert result.views is None
    mae = result.metrics["mean_absolute_error"]
    assert mae == pytest.approx(data.result.eval_metrics["eval_mae"], rel=1e-4)
    assert result.metrics["mean_squared_error"] == pytest.approx(
        data.result.eval_metrics["eval_rmse"] ** 2, rel=1e-3)
    frame = pd.read_parquet(data.eval)
    assert result.metrics["mean_label"] == pytest.approx(frame["monthly_charges"].mean(),
                                                         rel=1e-5)
    strict = _evaluate_task(data, tmp_path / "strict", max_mae=1.0)
    assert not strict.blessed
    assert strict.reason == f"mean_absolute_error = {mae:.4f} fails MAE <= 1.0"
    better = _evaluate_task(data, tmp_path / "better", baseline=weak, max_mae_increase=0.0)
    assert better.blessed and better.diffs["overall"]["mean_absolute_error"] < -5
    worse = _evaluate_task(data, tmp_path / "worse", model=weak, baseline=data.model_dir,
                           max_mae=100.0, max_mae_increase=0.5)
    assert not worse.blessed
    assert "fails MAE <= serving model's MAE + 0.5" in worse.reason


def test_a_serving_model_of_another_task_is_no_baseline(prepared, task_data, tmp_path):
    data = task_data["multiclass"]
    result = _evaluate_task(data, tmp_path / "blocked", baseline=prepared.model_dir,
                            min_accuracy=0.5)
    assert not result.blessed and result.tfma_blessed  # the thresholds alone pass
    assert result.reason.startswith(
        "the serving model is a binary model of classes ['0', '1'], the candidate a multiclass "
        "model of classes ['basic', 'premium', 'standard']: they cannot be compared")
    assert logic.BASELINE not in result.slices and result.checks[0].threshold == \
        "accuracy >= 0.5"
    report = markdown.report_markdown(result, 4, 1)
    assert "Baseline: serving version 4 cannot be compared" in report
    forced = _evaluate_task(data, tmp_path / "forced", baseline=prepared.model_dir,
                            min_accuracy=0.5,
                            policy=logic.Policy(force_bless_reason="new output: plan, ticket 7"))
    assert forced.blessed and forced.forced and "cannot be compared" in forced.reason


def test_component_views_per_task(task_data, tmp_path):
    def component(task, **params):
        data = task_data[task]
        outputs = {
            "blessing": Artifact(uri=str(tmp_path / task / "blessing")),
            "evaluation": Artifact(uri=str(tmp_path / task / "evaluation")),
            "metrics": Metrics(uri=str(tmp_path / task / "metrics")),
            "classification_metrics": ClassificationMetrics(uri=str(tmp_path / task / "cm")),
            "report": Markdown(uri=str(tmp_path / task / "report.md")),
        }
        (tmp_path / task).mkdir()
        blessed = evaluate.python_func(
            model=Model(uri=str(data.model_dir)), eval_data=Dataset(uri=str(data.eval)),
            label=data.label, baseline=_baseline_artifact(None, tmp_path / task),
            data_valid=True, **outputs, **{**DEFAULTS, **params})
        return blessed, outputs

    blessed, out = component("multiclass", min_accuracy=0.8)
    views = out["classification_metrics"].metadata
    assert blessed and out["blessing"].metadata["task"] == "multiclass"
    assert [c["displayName"] for c in views["confusionMatrix"]["annotationSpecs"]] == [
        "basic", "premium", "standard"]
    assert "confidenceMetrics" not in views  # no ROC curve for multiclass
    blessed, out = component("regression", max_mae=9.0)
    assert blessed and out["classification_metrics"].metadata == {}
    assert "mean_absolute_error" in out["metrics"].metadata
    assert "| overall |" in Path(out["report"].path).read_text()


# --- the no-skill check: what judges when no value threshold is set ---------------------------


def _task(task, prepared, task_data):
    """(model dir, eval path, label) of ``task``'s good model."""
    if task == contract.BINARY:
        return prepared.model_dir, prepared.eval, LABEL
    data = task_data[task]
    return data.model_dir, data.eval, data.label


@pytest.mark.parametrize("task", contract.TASKS)
def test_cold_start_without_thresholds_blesses_a_model_with_skill(task, prepared, task_data,
                                                                  tmp_path):
    model, eval_path, label = _task(task, prepared, task_data)
    result = logic.run(str(model), str(eval_path), label, None, logic.Thresholds(),
                       str(tmp_path / "tfma"))
    skill, judged = result.no_skill, logic.JUDGED[task]
    assert result.blessed and result.tfma_blessed, result.reason
    assert skill.passed and skill.problem is None and 0 < skill.lower_bound < skill.margin
    # The candidate's value is the judged metric on the same rows TFMA scored (TFMA's AUC is
    # approximated on 10,000 thresholds; the check's is exact).
    assert skill.candidate == pytest.approx(result.metrics[judged.metric], abs=2e-3)
    labels = pd.read_parquet(eval_path)[label].to_numpy()
    if task == contract.REGRESSION:
        assert skill.no_skill == pytest.approx(np.mean(np.abs(labels - np.median(labels))))
        assert skill.margin == pytest.approx(skill.no_skill - skill.candidate)
    else:
        assert skill.margin == pytest.approx(skill.candidate - skill.no_skill)
    assert result.checks == [skill.check()]
    assert result.reason == f"passed {skill.check().threshold}: {skill.summary}"
    assert f"beats no-skill by +{skill.margin:.4f}, 95% lower bound +{skill.lower_bound:.4f}" \
        in result.reason
    report = markdown.report_markdown(result, None, 1)
    assert "## No-skill baseline" in report and f"| no-skill | {skill.no_skill:.4f} |" in report
    assert f"| margin, 95% lower bound | {skill.lower_bound:+.4f} |" in report


@pytest.mark.parametrize("task", contract.TASKS)
def test_a_model_without_skill_is_not_blessed(task, prepared, task_data, tmp_path):
    model, eval_path, label = _task(task, prepared, task_data)
    # Regression's constant is the eval labels' median itself: no-skill at its strongest.
    median = float(np.median(pd.read_parquet(eval_path)[label]))
    constant = _export_constant_model(model, tmp_path / "constant",
                                      median if task == contract.REGRESSION else 0.3)
    result = logic.run(str(constant), str(eval_path), label, None, logic.Thresholds(),
                       str(tmp_path / "tfma"))
    skill = result.no_skill
    assert not result.blessed and not result.tfma_blessed and not skill.passed
    assert skill.margin <= 0 and skill.lower_bound <= 0
    assert result.reason.startswith(f"{logic.JUDGED[task].shown} margin over no-skill, 95% "
                                    "lower bound = ")
    assert f"fails {logic.JUDGED[task].shown} beats no-skill ({skill.predictor}" in result.reason
    assert "The candidate beats no-skill by" in markdown.report_markdown(result, None, 1)
    assert ": FAIL." in markdown.report_markdown(result, None, 1)


def test_a_serving_model_does_not_bless_guessing(prepared, weak_model, tmp_path):
    # The change threshold alone would pass a constant against a weak serving model; the
    # no-skill check still applies since no value threshold is set.
    constant = _export_constant_model(prepared.model_dir, tmp_path / "constant")
    result = _evaluate(constant, prepared, tmp_path, baseline=weak_model, max_auc_decrease=1.0)
    assert [c.passed for c in result.checks] == [False, True]
    assert not result.blessed and "fails AUC beats no-skill" in result.reason


def test_a_hand_set_value_threshold_replaces_the_no_skill_check(prepared, tmp_path):
    constant = _export_constant_model(prepared.model_dir, tmp_path / "constant")
    result = _evaluate(constant, prepared, tmp_path, min_auc=0.5)
    assert result.blessed and result.reason == "passed AUC >= 0.5" and result.no_skill is None
    assert result.metrics["auc"] == pytest.approx(0.5)


def test_answers_of_nan_cannot_beat_no_skill():
    answers = np.array([0.2, np.nan, 0.9, np.inf])
    skill = logic.no_skill(contract.BINARY, np.array([0, 1, 1, 0]), answers, ["0", "1"])
    assert not skill.passed and skill.lower_bound is None
    assert skill.check().shown == "AUC margin over no-skill, 95% lower bound = n/a"
    assert skill.summary == ("the candidate answered NaN or infinity for 2 of 4 eval rows: it "
                             "cannot be shown to beat no-skill")


def test_regression_change_threshold_defaults_to_one_percent(task_data, weak_task_models,
                                                             tmp_path):
    data, weak = task_data["regression"], weak_task_models["regression"]
    same = _evaluate_task(data, tmp_path / "same", baseline=data.model_dir)
    assert same.blessed, same.reason
    assert same.checks[1].threshold == ("MAE <= serving model's MAE + 1% (max_mae_increase not "
                                        "set)")
    worse = _evaluate_task(data, tmp_path / "worse", model=weak, baseline=data.model_dir,
                           max_mae=100.0)
    assert not worse.blessed
    assert worse.reason.endswith("fails MAE <= serving model's MAE + 1% (max_mae_increase not "
                                 "set)")


@pytest.mark.parametrize("task", contract.TASKS)
def test_noise_does_not_beat_no_skill(task):
    rng = np.random.default_rng(3)
    labels = {contract.BINARY: rng.integers(0, 2, 3000),
              contract.MULTICLASS: rng.choice(3, 3000, p=[0.5, 0.3, 0.2]),
              contract.REGRESSION: rng.gamma(2.0, 10.0, 3000)}[task]
    noise = {contract.BINARY: rng.random(3000),
             contract.MULTICLASS: rng.dirichlet(np.ones(3), 3000),
             contract.REGRESSION: rng.gamma(2.0, 10.0, 3000)}[task]
    skill = logic.no_skill(task, labels, noise, ["a", "b", "c"])
    assert not skill.passed and skill.lower_bound < 0


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 500)
    scores = labels * 0.1 + rng.random(500)
    first = logic.no_skill(contract.BINARY, labels, scores, ["0", "1"])
    assert logic.no_skill(contract.BINARY, labels, scores, ["0", "1"]) == first
    other = logic.no_skill(contract.BINARY, labels, scores, ["0", "1"], seed=1)
    assert other.lower_bound != first.lower_bound and other.margin == first.margin
    # The margin is measured exactly: AUC by pairs, a tie counting half.
    positives, negatives = scores[labels == 1][:, None], scores[labels == 0][None, :]
    pairs = (positives > negatives) + 0.5 * (positives == negatives)
    assert first.candidate == pytest.approx(pairs.mean())


def test_a_one_class_eval_split_cannot_show_skill():
    skill = logic.no_skill(contract.BINARY, np.zeros(50, np.int64), np.linspace(0, 1, 50),
                           ["0", "1"])
    assert not skill.passed and skill.problem.startswith("the eval rows hold one class only")


@pytest.mark.parametrize("name", ["min_auc", "max_auc_decrease", "max_mae"])
def test_only_the_exact_off_sentinel_turns_a_threshold_off(name):
    assert getattr(logic.Thresholds.from_parameters(**{name: NO_THRESHOLD}), name) is None
    with pytest.raises(ConfigError) as caught:
        logic.Thresholds.from_parameters(**{name: -0.7})
    units = "in the label's units" if name == "max_mae" else "in [0, 1]"
    assert str(caught.value).startswith(f"{name} -0.7 is negative: only -1.0 means no "
                                        f"threshold; pass a value ")
    assert units in str(caught.value) and str(caught.value).endswith("or -1.0 to turn it off")


def test_component_skips_when_data_validation_blocked(tmp_path, prepared):
    """The local pipeline (no dsl.If) runs evaluate after a failed gate: nothing is evaluated,
    nothing blessed, and the blessing and report say why."""
    model = Model(uri=str(tmp_path / "not-trained"))
    model.metadata["skipped"] = "data validation blocked: 1 blocking anomaly: plan (Drift)"
    outputs = evaluate_outputs(tmp_path)
    blessed = evaluate.python_func(
        model=model, eval_data=Dataset(uri=str(prepared.eval)), label=LABEL,
        baseline=_baseline_artifact(prepared.model_dir, tmp_path), data_valid=False,
        **outputs, **DEFAULTS)
    meta = outputs["blessing"].metadata
    assert blessed is False and meta["blessed"] is None
    assert meta["skipped"] == "data validation blocked: 1 blocking anomaly: plan (Drift)"
    assert meta["reason"] == f"skipped: {meta['skipped']}" and meta["baseline_version"] == 1
    assert (tmp_path / "blessing").read_text() == "NOT_BLESSED\n"
    assert "Skipped: data validation blocked" in (tmp_path / "report.md").read_text()
    assert outputs["metrics"].metadata == {}
