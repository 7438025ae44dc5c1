"""Fairness in evaluate: the intervals, the groups and gaps and their judgement (in-process), then
real TFMA on generated data: every group's counts agree with the model's own answers, fairness
thresholds join the blessing, and with fairness off nothing changes."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Dataset, Model

from conftest import EXCLUDE, LABEL, evaluate_outputs
from ctloop import contract
from ctloop.components.evaluate import fairness as fair
from ctloop.components.evaluate import logic
from ctloop.components.evaluate import report as markdown
from ctloop.components.evaluate.component import evaluate
from ctloop.components.train import logic as train
from ctloop.errors import ConfigError
from ctloop.settings import NO_THRESHOLD, Fairness, Policy, Thresholds

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")


# --- intervals --------------------------------------------------------------------------------


def test_wilson_and_newcombe_give_the_published_intervals():
    # Newcombe (1998), Statistics in Medicine 17: 81/263 and 56/70 - 48/80 (method 10).
    assert fair.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert fair.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert fair.wilson(3, 0) == (None, None)
    high = fair.Rate(56 / 70, *fair.wilson(56, 70), 70)
    low = fair.Rate(48 / 80, *fair.wilson(48, 80), 80)
    assert fair.newcombe(high, low) == pytest.approx((0.0524, 0.3339), abs=1e-4)


# --- groups, gaps and checks, from per-slice metrics ------------------------------------------


def _counts(tp, fp, tn, fn, auc=0.8):
    return {"example_count": float(tp + fp + tn + fn), "auc": auc, "true_positives": float(tp),
            "false_positives": float(fp), "true_negatives": float(tn),
            "false_negatives": float(fn)}


SLICES = {
    "overall": _counts(130, 55, 345, 70),
    # FPR 10/100 = 0.10, TPR 40/50 = 0.80
    "sex=female": _counts(40, 10, 90, 10),
    # FPR 40/200 = 0.20, TPR 80/100 = 0.80
    "sex=male": _counts(80, 40, 160, 20),
    # 10 negatives and 10 positives: too small to judge at min_group_size 30
    "sex=other": _counts(10, 5, 5, 0),
    "region=a": _counts(1, 1, 8, 9),  # one column's groups never mix with another's
}


def _measure(baseline_slices=None, **settings):
    fairness = Fairness(("sex",), **settings)
    slices = {"candidate": SLICES}
    if baseline_slices:
        slices["baseline"] = baseline_slices
    result = fair.measure(fairness, slices, contract.BINARY, "candidate",
                          "baseline" if baseline_slices else None)
    return fairness, result


def test_every_group_gets_its_rates_with_intervals():
    _, result = _measure()
    groups = {g.name: g for g in result.groups["sex"]}
    assert list(groups) == ["sex=female", "sex=male", "sex=other"]
    female = groups["sex=female"]
    assert (female.rows, female.positives, female.metric) == (150, 50, 0.8)
    fpr = female.rates["false_positive_rate"]
    assert (fpr.value, fpr.trials) == (0.1, 100)
    assert (fpr.low, fpr.high) == pytest.approx(fair.wilson(10, 100))
    assert female.rates["positive_rate"].value == pytest.approx(50 / 150)
    assert groups["sex=male"].rates["true_positive_rate"].value == pytest.approx(0.8)


def test_a_gap_names_its_groups_and_leaves_small_groups_out():
    _, result = _measure()
    gap = next(g for g in result.gaps if g.rate == "false_positive_rate")
    # sex=other's FPR is 0.5, but on 10 negatives: reported, not judged.
    assert (gap.high, gap.low) == ("sex=male", "sex=female")
    assert gap.gap == pytest.approx(0.1) and gap.ratio == pytest.approx(0.5)
    assert gap.too_small == ["sex=other (10 negatives)"]
    male = fair.Rate(0.2, *fair.wilson(40, 200), 200)
    female = fair.Rate(0.1, *fair.wilson(10, 100), 100)
    assert (gap.ci_low, gap.ci_high) == pytest.approx(fair.newcombe(male, female))
    assert gap.between() == ("false positive rate gap 0.1000 between sex=male (0.2000) and "
                             "sex=female (0.1000)")


def test_a_gap_above_its_threshold_fails_naming_the_groups():
    fairness, result = _measure(max_fpr_gap=0.05, max_tpr_gap=0.05)
    fpr, tpr = fair.checks(fairness, result, with_baseline=False)
    assert not fpr.passed and fpr.value == pytest.approx(0.1)
    assert fpr.metric == "false positive rate gap over sex"
    assert fpr.threshold == "false positive rate gap <= max_fpr_gap 0.05"
    assert fpr.detail.startswith("false positive rate gap 0.1000 between sex=male (0.2000) and "
                                 "sex=female (0.1000), 95% CI [")
    assert fpr.detail.endswith("; not judged (too small): sex=other (10 negatives)")
    assert tpr.passed and tpr.value == pytest.approx(0.0)  # 0.80 and 0.80
    blessed, reason = logic.bless(None, [fpr, tpr])
    assert not blessed and reason.startswith(
        "false positive rate gap over sex = 0.1000 fails false positive rate gap <= max_fpr_gap "
        "0.05: false positive rate gap 0.1000 between sex=male (0.2000) and sex=female")


def test_a_gap_that_cannot_be_judged_fails():
    fairness, result = _measure(max_tpr_gap=0.2, min_group_size=60)
    (check,) = fair.checks(fairness, result, with_baseline=False)
    # Only sex=male has >= 60 positives.
    assert not check.passed and check.value is None
    assert check.detail == (
        "fewer than two groups of sex have >= 60 positives (sex=female (50 positives), "
        "sex=other (10 positives)): it cannot be shown to hold; lower min_group_size or evaluate "
        "on more rows")


def test_a_missing_count_fails_safe():
    slices = {**SLICES, "sex=female": {"example_count": 150.0, "auc": 0.8}}
    fairness = Fairness(("sex",), max_fpr_gap=0.5)
    result = fair.measure(fairness, {"candidate": slices}, contract.BINARY, "candidate", None)
    (check,) = fair.checks(fairness, result, with_baseline=False)
    assert not check.passed and "sex=female (0 negatives)" in check.detail
    assert "| sex=female | 150 | n/a | n/a | n/a | n/a | 0.8000 |" in fair.markdown(result, None)


def test_the_change_vs_the_serving_model_applies_only_with_one():
    baseline = {**SLICES, "sex=male": _counts(80, 24, 176, 20)}  # FPR 0.12: a gap of 0.02
    fairness, result = _measure(baseline, max_fairness_gap_increase=0.05)
    gaps = {g.rate: g for g in result.gaps}
    assert gaps["false_positive_rate"].baseline_gap == pytest.approx(0.02)
    fpr, tpr = fair.checks(fairness, result, with_baseline=True)
    assert fpr.is_change and not fpr.passed and fpr.value == pytest.approx(0.08)
    assert fpr.threshold == ("false positive rate gap <= serving model's + "
                             "max_fairness_gap_increase 0.05")
    assert fpr.detail.endswith("the serving model's gap over the same groups 0.0200")
    assert tpr.passed and tpr.value == pytest.approx(0.0)
    # Cold start: no serving model, so only absolute gaps apply (none is set here).
    assert fair.checks(fairness, _measure(max_fairness_gap_increase=0.05)[1], False) == []


def test_other_tasks_report_their_metric_per_group_and_refuse_fairness_thresholds():
    slices = {"overall": {"example_count": 300.0, "mean_absolute_error": 5.0},
              "sex=female": {"example_count": 100.0, "mean_absolute_error": 4.0},
              "sex=male": {"example_count": 200.0, "mean_absolute_error": 5.5}}
    fairness = Fairness(("sex",))
    result = fair.measure(fairness, {"candidate": slices}, contract.REGRESSION, "candidate",
                          None)
    (gap,) = result.gaps
    assert (gap.rate, gap.high, gap.low, gap.gap) == ("mean_absolute_error", "sex=male",
                                                      "sex=female", 1.5)
    assert fair.checks(fairness, result, False) == []
    assert "| sex=male | 200 | 5.5000 |" in fair.markdown(result, None)
    with pytest.raises(ConfigError, match=r"^fairness thresholds \(max_fpr_gap\) judge binary "
                                          "models only .* not regression; unset them"):
        Fairness(("sex",), max_fpr_gap=0.1).check_task(contract.REGRESSION)


def test_fairness_settings_fail_in_one_line():
    off = Fairness.from_parameters(sensitive_features=None, max_fpr_gap=NO_THRESHOLD,
                                   max_tpr_gap=NO_THRESHOLD,
                                   max_fairness_gap_increase=NO_THRESHOLD, min_group_size=30)
    assert off == Fairness() and not off.on and off.thresholds == {}
    cases = {
        "max_fpr_gap -0.5 is negative: only -1.0 means no threshold": dict(
            sensitive_features=["a"], max_fpr_gap=-0.5),
        "max_tpr_gap 1.5 is out of range: a difference of two rates": dict(
            sensitive_features=["a"], max_tpr_gap=1.5),
        "fairness thresholds (max_fpr_gap) are set but sensitive_features is empty": dict(
            max_fpr_gap=0.1),
        "min_group_size 0 is invalid: use at least 1": dict(min_group_size=0),
    }
    for message, values in cases.items():
        with pytest.raises(ConfigError) as caught:
            Fairness.from_parameters(**values)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


# --- real TFMA on generated data -------------------------------------------------------------


@pytest.fixture(scope="module")
def blind_model(prepared, tmp_path_factory):
    """A candidate trained without its sensitive column, as train does by default."""
    out = tmp_path_factory.mktemp("blind") / "model"
    train.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL,
              [*EXCLUDE, "contract"], train.Hyperparameters(epochs=4), str(out))
    return out


def _predictions(model_dir, frame, label=LABEL):
    """The model's answers for the rows of ``frame``, in its order."""
    from ctloop.components.evaluate.no_skill import predictions
    from ctloop.contract import to_inputs

    inputs = to_inputs(frame, logic.load_features(model_dir))
    return predictions(str(model_dir), [(inputs, frame[label].to_numpy())])[1]


def _answers(model_dir, frame):
    return _predictions(model_dir, frame) > 0.5


def test_groups_agree_with_the_models_answers_and_thresholds_join_the_blessing(
        prepared, blind_model, tmp_path):
    settings = dict(max_fpr_gap=1.0, max_tpr_gap=1.0, max_fairness_gap_increase=1.0)
    # Blind to its contract, the candidate is a little less accurate than the serving model.
    result = logic.run(str(blind_model), str(prepared.eval), LABEL, str(prepared.model_dir),
                       Thresholds(max_auc_decrease=0.1), str(tmp_path / "loose"),
                       fairness=Fairness(("contract", "region"), **settings))
    assert result.blessed, result.reason
    frame = pd.read_parquet(prepared.eval)
    predicted, actual = _answers(blind_model, frame), frame[LABEL].to_numpy() == 1
    for group in result.fairness.groups["contract"]:
        rows = (frame["contract"] == group.name.split("=", 1)[1]).to_numpy()
        negatives = rows & ~actual
        assert (group.rows, group.positives) == (rows.sum(), (rows & actual).sum())
        fpr = group.rates["false_positive_rate"]
        assert (fpr.trials, fpr.value) == (negatives.sum(),
                                           pytest.approx((negatives & predicted).mean() /
                                                         negatives.mean()))
    # The eval rows' missing regions are a group of their own.
    assert "region=" in {g.name for g in result.fairness.groups["region"]}
    # The counts feed the groups; the task's metrics stay what they were.
    assert set(result.metrics) == set(logic.METRICS[contract.BINARY].values())
    # One check per bounded gap and column; the changes against the serving model's gaps.
    names = [c.metric for c in result.checks]
    assert names[:2] == ["AUC margin over no-skill, 95% lower bound",
                         "auc change vs serving model"]
    assert names[2:6] == ["false positive rate gap over contract",
                          "false positive rate gap over contract change vs serving model",
                          "true positive rate gap over contract",
                          "true positive rate gap over contract change vs serving model"]
    gaps = {(g.feature, g.rate): g for g in result.fairness.gaps}
    fpr = gaps[("contract", "false_positive_rate")]
    assert result.checks[3].value == pytest.approx(fpr.gap - fpr.baseline_gap)
    report = markdown.report_markdown(result, 1, 1)
    assert "## Fairness" in report and "serving model's (v1) gap" in report
    assert f"| contract | false positive rate | {fpr.gap:.4f}: {fpr.high} " in report

    strict = logic.run(str(blind_model), str(prepared.eval), LABEL, None, Thresholds(),
                       str(tmp_path / "strict"), fairness=Fairness(("region",), max_fpr_gap=0.01))
    gap = next(g for g in strict.fairness.gaps if g.rate == "false_positive_rate")
    assert gap.gap > 0.01 and not strict.blessed
    assert strict.reason.startswith(f"false positive rate gap over region = {gap.gap:.4f} fails "
                                    f"false positive rate gap <= max_fpr_gap 0.01: "
                                    f"{gap.between()}")
    assert "region= (" in strict.reason  # the small group of missing regions, not judged


def _component(model, prepared, tmp_path, **params):
    outputs = evaluate_outputs(tmp_path)
    baseline = Model(uri=str(tmp_path / "no-baseline"))
    baseline.metadata["version"] = None
    defaults = {"min_auc": NO_THRESHOLD, "max_auc_decrease": 0.01,
                "min_accuracy": NO_THRESHOLD, "max_accuracy_decrease": 0.01,
                "max_mae": NO_THRESHOLD, "max_mae_increase": NO_THRESHOLD,
                "cold_start": Policy.cold_start, "max_fpr_gap": NO_THRESHOLD,
                "max_tpr_gap": NO_THRESHOLD, "max_fairness_gap_increase": NO_THRESHOLD,
                "min_group_size": Fairness.min_group_size}
    blessed = evaluate.python_func(
        model=Model(uri=str(model)), eval_data=Dataset(uri=str(prepared.eval)), label=LABEL,
        baseline=baseline, data_valid=True, slice_features=["contract"], **outputs,
        **{**defaults, **params})
    return blessed, outputs["blessing"].metadata, (tmp_path / "report.md").read_text()


# What the blessing said before fairness existed: with fairness off, exactly this.
KEYS_WITHOUT_FAIRNESS = {"blessed", "reason", "forced", "force_reason", "tfma_blessed",
                         "tfma_reason", "checks", "metrics", "baseline_version",
                         "baseline_metrics", "task", "incomparable", "no_skill",
                         "beam"}


def test_fairness_off_costs_nothing_and_changes_nothing(prepared, tmp_path):
    blessed, meta, report = _component(prepared.model_dir, prepared, tmp_path)
    assert blessed and set(meta) == KEYS_WITHOUT_FAIRNESS
    config = json.loads((tmp_path / "evaluation" / "eval_config.json").read_text())
    config = config.get("evalConfig", config)
    metrics = [m["className"] for spec in config["metricsSpecs"] for m in spec["metrics"]]
    assert not set(fair.COUNTS) & set(metrics)  # no extra TFMA metric
    assert [s.get("featureKeys") for s in config["slicingSpecs"]] == [None, ["contract"]]
    assert "## Fairness" not in report and "## Thresholds (overall slice)\n" in report


def test_component_names_the_group_and_the_gap_when_fairness_blocks(prepared, tmp_path):
    blessed, meta, report = _component(prepared.model_dir, prepared, tmp_path,
                                       sensitive_features=["region"], max_fpr_gap=0.01)
    assert blessed is False and meta["blessed"] is False
    assert meta["decided_by"] == ["false positive rate gap over region"]
    gap = next(g for g in meta["fairness"]["gaps"] if g["rate"] == "false_positive_rate")
    assert gap["gap"] > 0.01 and gap["high"].startswith("region=")
    named = (f"false positive rate gap {gap['gap']:.4f} between {gap['high']} "
             f"({gap['high_value']:.4f}) and {gap['low']} ({gap['low_value']:.4f})")
    assert named in meta["reason"]
    groups = meta["fairness"]["groups"]["region"]
    assert sum(g["rows"] for g in groups) == meta["metrics"]["example_count"]
    assert "**NOT BLESSED**: false positive rate gap over region" in report
    assert "## Thresholds (overall slice; fairness: gaps between groups)" in report
    assert "| false positive rate gap <= max_fpr_gap 0.01 | false positive rate gap over region " \
        f"= {gap['gap']:.4f} | FAIL |" in report
    for group in groups:
        assert f"| {group['name']} | {group['rows']} | {group['positives']} |" in report


def test_a_sensitive_column_of_many_values_is_refused_before_tfma(prepared, tmp_path):
    with pytest.raises(ConfigError, match=r"^sensitive feature 'age' has \d+ distinct values in "
                                          "the eval split, more than 20 groups: bin it"):
        logic.run(str(prepared.model_dir), str(prepared.eval), LABEL, None, Thresholds(),
                  str(tmp_path / "tfma"), fairness=Fairness(("age",)))
    assert not Path(tmp_path / "tfma").exists()


def test_multiclass_groups_are_reported_on_accuracy(task_data, tmp_path):
    data = task_data["multiclass"]
    result = logic.run(str(data.model_dir), str(data.eval), data.label, None, Thresholds(),
                       str(tmp_path / "tfma"), fairness=Fairness(("contract",)))
    (gap,) = result.fairness.gaps
    accuracy = {g.name: g.metric for g in result.fairness.groups["contract"]}
    assert gap.rate == "sparse_categorical_accuracy" and len(accuracy) == 3
    assert gap.gap == pytest.approx(max(accuracy.values()) - min(accuracy.values()))
    frame = pd.read_parquet(data.eval)
    right = _predictions(data.model_dir, frame, data.label).argmax(axis=-1) == frame[data.label]
    for name, value in accuracy.items():
        rows = (frame["contract"] == name.split("=", 1)[1]).to_numpy()
        assert value == pytest.approx(np.mean(right[rows]), abs=1e-6)
    with pytest.raises(ConfigError, match="judge binary models only"):
        logic.run(str(data.model_dir), str(data.eval), data.label, None, Thresholds(),
                  str(tmp_path / "refused"), fairness=Fairness(("contract",), max_tpr_gap=0.1))
