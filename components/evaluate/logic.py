"""Evaluate: TFMA on the eval split, candidate vs the serving model, and the blessing.

TFMA runs inference itself on both SavedModels (``tf_generic`` models whose ``serving_default``
signature takes raw features, fed from Arrow record batches by column name), computes the task's
metrics overall and per slice, and validates the thresholds on the task's judged metric (AUC,
accuracy, or mean absolute error: ``JUDGED``): a value threshold on the candidate's and, when a
baseline serves, a change threshold against it. Thresholds judge the overall slice. A serving
model of another task or other label classes cannot be compared: the candidate is not blessed.

With no hand-set value threshold, the candidate must beat a no-skill predictor on the same eval
rows (``no_skill``): a constant (AUC 0.5), the majority class, or the labels' median, by a
margin whose one-sided 95% paired-bootstrap lower bound is above 0.

The blessing is the checks' verdict, then the policy: with no serving model,
``require_baseline`` blesses nothing; a force-bless reason blesses anything, and the verdict it
overrode is kept. A classifier's confusion matrix (and a binary one's ROC curve) come from
TFMA's plots.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ctloop import beam_options, contract
from ctloop.contract import FeatureSpec, to_inputs
from ctloop.errors import ConfigError, ModelError
from ctloop.settings import (
    BLESS_ON_THRESHOLDS,
    JUDGED,
    REQUIRE_BASELINE,
    Policy,
    Thresholds,
)

CANDIDATE, BASELINE = "candidate", "baseline"
# Per task: TFMA metric class -> the name TFMA gives its value.
METRICS = {
    contract.BINARY: {"ExampleCount": "example_count", "AUC": "auc",
                      "BinaryAccuracy": "binary_accuracy", "Precision": "precision",
                      "Recall": "recall"},
    contract.MULTICLASS: {"ExampleCount": "example_count",
                          "SparseCategoricalAccuracy": "sparse_categorical_accuracy"},
    contract.REGRESSION: {"ExampleCount": "example_count",
                          "MeanAbsoluteError": "mean_absolute_error",
                          "MeanSquaredError": "mean_squared_error", "MeanLabel": "mean_label",
                          "MeanPrediction": "mean_prediction"},
}
BATCH_ROWS = 1000
# ROC thresholds 0, 0.01, ..., 1: a smooth curve that keeps KFP's metadata small. Even, so that
# MATRIX_THRESHOLD, the one binary_accuracy, precision and recall use, is among them.
ROC_THRESHOLDS = 100
MATRIX_THRESHOLD = 0.5
FORCED_PREFIX = "FORCE-BLESSED: "
# The no-skill check: a paired bootstrap over the eval rows, seeded so that a rerun on the same
# rows decides the same; 1000 resamples put the 5th percentile within about 0.1 standard errors.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95  # one-sided: the margin's lower bound is its 5th bootstrap percentile
PREDICT_ROWS = 4096  # rows per in-process call of the candidate's signature


@dataclasses.dataclass(frozen=True)
class Check:
    """A threshold applied on the overall slice (by TFMA, or the no-skill check), and how the
    candidate fared."""

    metric: str  # e.g. "auc", or "auc change vs serving model" (candidate - baseline)
    threshold: str  # e.g. "AUC >= 0.7"
    value: float | None  # None: it could not be computed
    passed: bool
    is_change: bool = False
    detail: str | None = None  # the no-skill check's: "beats no-skill by X, 95% lower bound Y"

    @property
    def shown(self) -> str:
        return f"{self.metric} = {_number(self.value, signed=self.is_change)}"


@dataclasses.dataclass(frozen=True)
class NoSkill:
    """The candidate against a predictor with no skill, on the same eval rows.

    ``margin`` is how much better the candidate is (AUC or accuracy: candidate - no-skill; MAE:
    no-skill - candidate), ``lower_bound`` its one-sided ``CONFIDENCE`` lower bound from a paired
    bootstrap over the rows. The check passes only when ``lower_bound`` > 0.
    """

    predictor: str  # e.g. "the majority class 'basic'"
    shown: str  # the judged metric as the report writes it
    no_skill: float | None
    candidate: float | None
    margin: float | None
    lower_bound: float | None
    resamples: int
    seed: int
    problem: str | None = None  # why the margin could not be measured (then it fails)

    @property
    def passed(self) -> bool:
        return self.problem is None and self.lower_bound is not None and self.lower_bound > 0

    @property
    def summary(self) -> str:
        if self.problem:
            return self.problem
        return (f"beats no-skill by {_number(self.margin, signed=True)}, "
                f"{CONFIDENCE:.0%} lower bound {_number(self.lower_bound, signed=True)} "
                f"({self.shown} {_number(self.candidate)} vs {_number(self.no_skill)})")

    def check(self) -> Check:
        return Check(f"{self.shown} margin over no-skill, {CONFIDENCE:.0%} lower bound",
                     f"{self.shown} beats no-skill ({self.predictor}: {self.shown} "
                     f"{_number(self.no_skill)})", self.lower_bound, self.passed,
                     is_change=True, detail=self.summary)


@dataclasses.dataclass(frozen=True)
class Views:
    """A classifier's overall confusion matrix and (binary) ROC curve, as KFP's UI shows them."""

    categories: list[str]  # label classes: [negative, positive], or in the model's output order
    confusion_matrix: list[list[int]]  # rows: actual class, columns: predicted (binary: at 0.5,
    # multiclass: the most probable class)
    thresholds: list[float]  # ROC points, ascending (empty: multiclass, or a class is absent)
    fpr: list[float]
    tpr: list[float]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    blessed: bool
    reason: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    slices: dict[str, dict[str, dict[str, float]]]  # model -> slice name -> metrics
    diffs: dict[str, dict[str, float]]  # slice name -> candidate - baseline per metric (TFMA's)
    checks: list[Check]
    tfma_blessed: bool  # the thresholds' verdict, before the cold-start policy and any force
    tfma_reason: str
    force_reason: str | None  # None: not forced
    views: Views | None  # None: regression
    task: str = contract.BINARY
    incomparable: str | None = None  # why the serving model could not be the baseline
    no_skill: NoSkill | None = None  # None: a hand-set value threshold judged instead

    @property
    def forced(self) -> bool:
        return self.force_reason is not None


def load_features(model_dir: str | Path) -> list[FeatureSpec]:
    return [FeatureSpec(n, d) for n, d in contract.read_features(model_dir).items()]


def eval_config(label: str, thresholds: Thresholds, with_baseline: bool,
                slice_features: list[str], task: str = contract.BINARY):
    import tensorflow_model_analysis as tfma

    def spec(name: str, is_baseline: bool):
        return tfma.ModelSpec(
            name=name, signature_name=contract.SERVING_SIGNATURE, label_key=label,
            prediction_key=contract.OUTPUT_KEYS[task], model_type="tf_generic",
            is_baseline=is_baseline,
        )

    judged = JUDGED[task]
    value = thresholds.of(task)[0]
    change, relative = thresholds.change_of(task)
    threshold = tfma.MetricThreshold()
    if value is not None:
        bound = threshold.value_threshold.lower_bound if judged.higher_is_better else \
            threshold.value_threshold.upper_bound
        bound.value = value
    # A change threshold needs a baseline: on cold start only the value threshold applies.
    if with_baseline and change is not None:
        threshold.change_threshold.direction = (
            tfma.MetricDirection.HIGHER_IS_BETTER if judged.higher_is_better
            else tfma.MetricDirection.LOWER_IS_BETTER)
        if relative:
            threshold.change_threshold.relative.value = change
        else:
            threshold.change_threshold.absolute.value = (-change if judged.higher_is_better
                                                         else change)
    overall = tfma.SlicingSpec()
    metrics = [
        tfma.MetricConfig(
            class_name=name,
            per_slice_thresholds=[
                tfma.PerSliceMetricThreshold(slicing_specs=[overall], threshold=threshold)
            ] if name == judged.class_name and threshold.ByteSize() else [],
        )
        for name in METRICS[task]
    ]
    plots = {
        contract.BINARY: [tfma.MetricConfig(
            class_name="ConfusionMatrixPlot",
            config=json.dumps({"num_thresholds": ROC_THRESHOLDS}))],
        # Threshold 0: each row counts for its most probable class.
        contract.MULTICLASS: [tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot",
                                                config=json.dumps({"thresholds": [0.0]}))],
        contract.REGRESSION: [],
    }[task]
    return tfma.EvalConfig(
        model_specs=[spec(CANDIDATE, False)] + ([spec(BASELINE, True)] if with_baseline else []),
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)] + (
            [tfma.MetricsSpec(metrics=plots, model_names=[CANDIDATE])] if plots else []),
        slicing_specs=[overall] + [tfma.SlicingSpec(feature_keys=[f]) for f in slice_features],
    )


def record_batches(frame: pd.DataFrame, features: list[FeatureSpec], label: str,
                   task: str = contract.BINARY) -> list[pa.RecordBatch]:
    """Eval rows as TFMA reads them: one-element list columns, in the signature's dtypes; the
    label as ingest encoded it (a class index, or a number for regression)."""
    labels = frame[label].to_numpy(np.float32 if task == contract.REGRESSION else np.int64)
    inputs = to_inputs(frame, features)
    batches = []
    for start in range(0, len(frame), BATCH_ROWS):
        rows = slice(start, start + BATCH_ROWS)
        size = len(frame.iloc[rows])
        offsets = pa.array(np.arange(size + 1, dtype=np.int32))
        columns, names = [], []
        for feature in features:
            values = inputs[feature.name][rows]
            array = (pa.array(values, type=pa.float32()) if feature.dtype == contract.NUMERIC
                     else pa.array(values.tolist(), type=pa.binary()))
            columns.append(pa.ListArray.from_arrays(offsets, array))
            names.append(feature.name)
        columns.append(pa.ListArray.from_arrays(offsets, pa.array(labels[rows])))
        names.append(label)
        batches.append(pa.RecordBatch.from_arrays(columns, names))
    return batches


def run(
    model_dir: str,
    eval_path: str,
    label: str,
    baseline_dir: str | None,
    thresholds: Thresholds,
    output_dir: str,
    slice_features: list[str] | None = None,
    beam_pipeline_args: list[str] | None = None,
    policy: Policy | None = None,
) -> Evaluation:
    """Evaluates the candidate (and the baseline, if any) and decides the blessing."""
    import apache_beam as beam
    import tensorflow_model_analysis as tfma
    from apache_beam.options.pipeline_options import PipelineOptions

    policy = policy or Policy()
    slice_features = slice_features or []
    task, categories = contract.read_task(model_dir)
    incomparable = None
    if baseline_dir is not None and contract.read_task(baseline_dir) != (task, categories):
        serving_task, serving_classes = contract.read_task(baseline_dir)
        incomparable = (
            f"the serving model is a {serving_task} model of classes {serving_classes}, the "
            f"candidate a {task} model of classes {categories}: they cannot be compared and the "
            "serving model's clients would get another output; deploy the candidate under a new "
            "model name, or force-bless it to replace the serving model"
        )
    # Only a comparable serving model is TFMA's baseline; else the candidate is judged alone.
    with_baseline = baseline_dir is not None and incomparable is None
    config = eval_config(label, thresholds, with_baseline, slice_features, task)
    features = {f.name: f for f in load_features(model_dir)}
    if with_baseline:
        features = {**{f.name: f for f in load_features(baseline_dir)}, **features}
    frame = pd.read_parquet(eval_path)
    unknown = sorted(set(slice_features) - set(frame.columns))
    if unknown:
        raise ConfigError(f"slice features {unknown} are not columns of the eval data; fix them")
    for name in slice_features:
        features.setdefault(name, FeatureSpec(name, contract.CATEGORICAL))
    batches = record_batches(frame, list(features.values()), label, task)

    models = [tfma.default_eval_shared_model(
        eval_saved_model_path=model_dir, model_name=CANDIDATE, eval_config=config)]
    if with_baseline:
        models.append(tfma.default_eval_shared_model(
            eval_saved_model_path=baseline_dir, model_name=BASELINE, eval_config=config))
    # The stock chain would look for serialized tf.Examples to feed the model; this predictions
    # extractor feeds the raw feature columns to the signature by name instead.
    extractors = tfma.default_extractors(
        eval_shared_model=models, eval_config=config,
        custom_predict_extractor=tfma.extractors.PredictionsExtractor(
            eval_config=config, eval_shared_model=models),
    )
    options = PipelineOptions(beam_options.resolve(beam_pipeline_args))
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "EvalRows" >> beam.Create(batches, reshuffle=False)
            | "Evaluate" >> tfma.ExtractEvaluateAndWriteResults(
                eval_shared_model=models, eval_config=config, extractors=extractors,
                output_path=output_dir)
        )

    # With a single model, TFMA keys its results by no model name.
    candidate = tfma.load_eval_result(output_dir, model_name=CANDIDATE if with_baseline else None)
    candidate_slices, diffs = _slice_metrics(candidate)
    slices = {CANDIDATE: candidate_slices}
    if with_baseline:
        slices[BASELINE] = _slice_metrics(tfma.load_eval_result(output_dir, model_name=BASELINE))[0]
    metrics = candidate_slices["overall"]
    validation = tfma.load_validation_result(output_dir)
    applied = checks(validation, thresholds, with_baseline, metrics, diffs.get("overall", {}),
                     task)
    # With no threshold of its own TFMA reports "missing thresholds", not a verdict.
    validated = validation if applied else None
    skill = None
    # Fail safe and right: with no hand-set value threshold, a model is still never blessed for
    # being no better than guessing, with or without a serving model.
    if thresholds.of(task)[0] is None:
        predicted = predictions(model_dir, frame, load_features(model_dir))
        skill = no_skill(task, frame[label].to_numpy(), predicted, categories)
        applied.insert(0, skill.check())  # in the value threshold's place
    tfma_blessed, tfma_reason = bless(validated, applied, task)
    blessed, reason = decide(tfma_blessed, tfma_reason, policy, baseline_dir is not None,
                             incomparable)
    views = None if task == contract.REGRESSION else _views(candidate, categories, task)
    return Evaluation(
        blessed, reason, metrics, slices.get(BASELINE, {}).get("overall", {}), slices, diffs,
        applied, tfma_blessed, tfma_reason, policy.force_reason, views, task, incomparable,
        skill)


def predictions(model_dir: str, frame: pd.DataFrame, features: list[FeatureSpec]) -> np.ndarray:
    """The model's answer for every row of ``frame``, in order, computed in-process through its
    ``serving_default`` signature (``contract``), ``PREDICT_ROWS`` rows at a time: ``[rows]``, or
    ``[rows, classes]`` for multiclass."""
    import tensorflow as tf

    task = contract.read_task(model_dir)[0]
    signatures = tf.saved_model.load(model_dir).signatures
    if contract.SERVING_SIGNATURE not in signatures:
        raise ModelError(f"model {model_dir} has no {contract.SERVING_SIGNATURE!r} signature; "
                         "export it with ctloop's trainer")
    serve = signatures[contract.SERVING_SIGNATURE]
    inputs = to_inputs(frame, features)
    answers = [serve(**{name: tf.constant(values[start:start + PREDICT_ROWS])
                        for name, values in inputs.items()})[contract.OUTPUT_KEYS[task]].numpy()
               for start in range(0, len(frame), PREDICT_ROWS)]
    if not answers:
        return np.zeros((0, len(contract.read_task(model_dir)[1])) if task == contract.MULTICLASS
                        else (0,), np.float32)
    return np.concatenate(answers)


def no_skill(task: str, labels: np.ndarray, predicted: np.ndarray, categories: list[str],
             resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> NoSkill:
    """The candidate's margin over a no-skill predictor on the same rows, with its paired
    bootstrap lower bound.

    binary: any constant (e.g. the positive rate) has AUC 0.5, on every resample.
    multiclass: always the majority class of these rows, judged on accuracy.
    regression: always the median of these labels, judged on MAE.

    The multiclass and regression constants are chosen with the eval labels themselves: the
    majority class is the best constant for accuracy on these rows and the median the best
    constant for MAE, so no-skill is as strong as a constant can be there, which favours it,
    never the candidate (a conservative check).

    Args:
        task: The task type.
        labels: The eval rows' labels, as ingest encoded them.
        predicted: The candidate's answers for the same rows (``predictions``).
        categories: The label classes (multiclass: the names of the columns of ``predicted``).
        resamples: Bootstrap resamples of the rows.
        seed: The resampling's seed: the same rows and answers give the same bound.
    """
    judged = JUDGED[task]
    rows = len(labels)
    finite = np.isfinite(predicted).all(axis=-1) if predicted.ndim > 1 else \
        np.isfinite(predicted)
    if task == contract.BINARY:
        labels = labels.astype(np.int64)
        rate = _number(float(np.mean(labels)) if rows else None)
        predictor = f"a constant, e.g. the positive rate {rate}"
    elif task == contract.MULTICLASS:
        labels = labels.astype(np.int64)
        majority = int(np.bincount(labels).argmax()) if rows else 0
        name = categories[majority] if majority < len(categories) else str(majority)
        predictor = f"always the majority class {name!r}"
    else:
        labels = labels.astype(np.float64)
        median = float(np.median(labels)) if rows else 0.0
        predictor = f"always the eval labels' median {median:.4g}"

    def failed(problem: str) -> NoSkill:
        return NoSkill(predictor, judged.shown, None, None, None, None, resamples, seed,
                       problem)

    if not rows:
        return failed("no eval rows to compare the candidate with no-skill on")
    if not finite.all():
        return failed(f"the candidate answered NaN or infinity for {int((~finite).sum())} of "
                      f"{rows} eval rows: it cannot be shown to beat no-skill")
    rng = np.random.default_rng(seed)
    counts = (np.bincount(rng.integers(0, rows, rows), minlength=rows) for _ in range(resamples))
    if task == contract.BINARY:
        if labels.min() == labels.max():
            return failed(f"the eval rows hold one class only ({labels[0]}): AUC is undefined, "
                          "so the candidate cannot be shown to beat no-skill; evaluate on rows "
                          "of both classes")
        groups = np.unique(predicted.astype(np.float64), return_inverse=True)[1].ravel()
        baseline, candidate = 0.5, _auc(labels, groups)
        margins = np.array([_auc(labels, groups, weights) for weights in counts]) - baseline
    else:
        if task == contract.MULTICLASS:
            # Per row, 1 when right: the candidate's most probable class, and no-skill's.
            theirs = (labels == majority).astype(np.float64)
            ours = (predicted.argmax(axis=-1) == labels).astype(np.float64)
            gains = ours - theirs
        else:
            # Per row, how much smaller the candidate's absolute error is than no-skill's.
            theirs = np.abs(labels - median)
            ours = np.abs(labels - predicted.astype(np.float64))
            gains = theirs - ours
        baseline, candidate = float(theirs.mean()), float(ours.mean())
        margins = np.array([weights @ gains / rows for weights in counts])
    margins = margins[np.isfinite(margins)]  # a resample of one class has no AUC
    margin = candidate - baseline if judged.higher_is_better else baseline - candidate
    lower = float(np.quantile(margins, 1 - CONFIDENCE)) if len(margins) else None
    return NoSkill(predictor, judged.shown, baseline, candidate, float(margin), lower,
                   resamples, seed)


def _auc(labels: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The exact (weighted) AUC: the chance that a positive row scores above a negative one, a
    tie counting half. ``groups``: each row's rank among the distinct scores."""
    weights = np.ones(len(labels)) if weights is None else weights
    positives = np.bincount(groups, weights=weights * labels)
    negatives = np.bincount(groups, weights=weights * (1 - labels))
    pairs = positives.sum() * negatives.sum()
    if not pairs:
        return math.nan
    below = np.cumsum(negatives) - negatives
    return float(positives @ (below + negatives / 2) / pairs)


def checks(validation, thresholds: Thresholds, with_baseline: bool, metrics: dict[str, float],
           diffs: dict[str, float], task: str = contract.BINARY) -> list[Check]:
    """Each threshold TFMA applied, passed unless its ValidationResult names a failure."""
    # Only the judged metric has thresholds: a failure is the value threshold's, or the change
    # threshold's.
    failed = {failure.metric_key.is_diff
              for per_slice in validation.metric_validations_per_slice
              for failure in per_slice.failures}
    judged, value = JUDGED[task], thresholds.of(task)[0]
    change, relative = thresholds.change_of(task)
    sign, worse = (">=", "-") if judged.higher_is_better else ("<=", "+")
    applied = []
    if value is not None:
        applied.append(Check(judged.metric, f"{judged.shown} {sign} {value}",
                             metrics.get(judged.metric), False not in failed))
    if with_baseline and change is not None:
        bound = f"{change:.0%} (max_mae_increase not set)" if relative else f"{change}"
        applied.append(Check(
            f"{judged.metric} change vs serving model",
            f"{judged.shown} {sign} serving model's {judged.shown} {worse} {bound}",
            diffs.get(judged.metric), True not in failed, is_change=True))
    return applied


def bless(validation, applied: list[Check], task: str = contract.BINARY) -> tuple[bool, str]:
    """The checks' verdict and its reason, from the checks and TFMA's ValidationResult (None:
    TFMA had no threshold to validate)."""
    if not applied:
        # Fail safe, as TFX's Evaluator: with nothing to check, TFMA would pass anything.
        value, change = JUDGED[task].settings
        return False, (f"no threshold applies: set {value} (and {change}) to bless {task} "
                       "models")

    def detail(check: Check) -> str:
        return f": {check.detail}" if check.detail else ""

    failures = [f"{c.shown} fails {c.threshold}{detail(c)}" for c in applied if not c.passed]
    if failures:
        return False, "; ".join(failures)
    if validation is not None and not validation.validation_ok:  # unknown state blocks
        return False, "TFMA validation failed without naming a threshold: see validations.tfrecord"
    return True, "passed " + " and ".join(c.threshold + detail(c) for c in applied)


def decide(tfma_blessed: bool, tfma_reason: str, policy: Policy, with_baseline: bool,
           incomparable: str | None = None) -> tuple[bool, str]:
    """The blessing: the thresholds' verdict, then the cold-start policy or an incomparable
    serving model, then any force."""
    blessed, reason = tfma_blessed, tfma_reason
    if incomparable:
        blessed, reason = False, f"{incomparable} (thresholds alone: {tfma_reason})"
    if not with_baseline and policy.cold_start == REQUIRE_BASELINE:
        blessed, reason = False, (
            f"no serving model to compare against and cold_start is {REQUIRE_BASELINE!r} "
            f"(thresholds alone: {tfma_reason}); bootstrap the first version with "
            f"force_bless_reason, or use cold_start {BLESS_ON_THRESHOLDS!r}"
        )
    if policy.force_reason:
        return True, (f"{FORCED_PREFIX}{policy.force_reason} (without force: "
                      f"{'blessed' if blessed else 'not blessed'}: {reason})")
    return blessed, reason


def _slice_metrics(result) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Slice name -> metric -> value, and slice name -> metric -> change vs the baseline."""
    values, diffs = {}, {}
    for slice_key, by_output in result.slicing_metrics:
        name = "overall" if not slice_key else ", ".join(
            f"{k}={v.decode() if isinstance(v, bytes) else v}" for k, v in slice_key)
        # Undefined metrics (e.g. precision with no positive prediction) come back as "NaN".
        numbers = {
            metric: float(value["doubleValue"])
            for metric, value in by_output[""][""].items()
            if "doubleValue" in value and not math.isnan(float(value["doubleValue"]))
        }
        values[name] = {k: v for k, v in numbers.items() if not k.endswith("_diff")}
        diffs[name] = {k.removesuffix("_diff"): v for k, v in numbers.items()
                       if k.endswith("_diff")}
    return values, diffs


def _views(result, categories: list[str], task: str) -> Views:
    """The overall confusion matrix (and a binary model's ROC curve), from TFMA's plots."""
    plots = dict(result.plots)[()][""][""]
    if task == contract.MULTICLASS:
        # TFMA's JSON leaves out zero entries; at threshold 0 a row counts for its argmax.
        (at,) = plots["multiClassConfusionMatrixAtThresholds"]["matrices"]
        matrix = [[0] * len(categories) for _ in categories]
        for entry in at.get("entries", []):
            matrix[int(entry.get("actualClassId", 0))][int(entry.get("predictedClassId", 0))] = \
                int(entry.get("numWeightedExamples", 0))
        return Views(categories, matrix, [], [], [])
    plot = plots["confusionMatrixAtThresholds"]["matrices"]
    # TFMA's JSON leaves out zeros (threshold 0.0 included) and prepends a -1e-6 threshold,
    # which only adds predictions of exactly 0: the points kept are thresholds 0, 0.01, ..., 1.
    points = [{k: m.get(k, 0.0) for k in ("threshold", "truePositives", "falsePositives",
                                         "trueNegatives", "falseNegatives")}
              for m in plot if m.get("threshold", 0.0) >= 0.0]
    at = next(p for p in points if p["threshold"] == MATRIX_THRESHOLD)
    matrix = [[int(at["trueNegatives"]), int(at["falsePositives"])],
              [int(at["falseNegatives"]), int(at["truePositives"])]]
    positives, negatives = sum(matrix[1]), sum(matrix[0])
    if not (positives and negatives):  # one class only: no ROC curve is defined
        return Views(categories, matrix, [], [], [])
    return Views(categories, matrix, [p["threshold"] for p in points],
                 [p["falsePositives"] / negatives for p in points],
                 [p["truePositives"] / positives for p in points])


def _number(value: float | None, signed: bool = False, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return f"{value:{'+' if signed else ''}.{digits}f}"


def _cell(metric: str, value: float | None, signed: bool = False) -> str:
    return _number(value, signed, digits=0 if metric == "example_count" else 4)


def _no_skill_lines(skill: NoSkill, rows: float | None) -> list[str]:
    shown = skill.shown
    lines = ["## No-skill baseline", "",
             f"No value threshold is set, so the candidate must beat a predictor with no skill "
             f"on the same {_cell('example_count', rows)} eval rows ({skill.predictor}) by a "
             f"margin whose one-sided {CONFIDENCE:.0%} lower bound is above 0 (paired bootstrap "
             f"over the rows: {skill.resamples} resamples, seed {skill.seed}).", ""]
    if skill.problem:
        return lines + [f"Not measured: {skill.problem}.", ""]
    return lines + [
        f"| | {shown} |", "|---|---|",
        f"| no-skill | {_number(skill.no_skill)} |",
        f"| candidate | {_number(skill.candidate)} |",
        f"| margin (better is +) | {_number(skill.margin, signed=True)} |",
        f"| margin, {CONFIDENCE:.0%} lower bound | {_number(skill.lower_bound, signed=True)} |",
        "", f"The candidate {skill.summary}: "
        f"{'pass' if skill.passed else 'FAIL'}.", ""]


def report_markdown(evaluation: Evaluation, baseline_version: int | None, span: Any) -> str:
    """The verdict, each threshold, and candidate vs baseline per metric and slice (Markdown)."""
    verdict = "BLESSED" if evaluation.blessed else "NOT BLESSED"
    lines = [f"# Model evaluation: span {span}", ""]
    if evaluation.forced:
        tfma_verdict = "BLESSED" if evaluation.tfma_blessed else "NOT BLESSED"
        lines += [f"> **FORCE-BLESSED**: {evaluation.force_reason}", ">",
                  f"> The checks' verdict, recorded but not applied: "
                  f"**{tfma_verdict}**: {evaluation.tfma_reason}", ""]
    lines += [f"**{verdict}**: {evaluation.reason}", "", f"Task: {evaluation.task}.", ""]
    cold_start = BASELINE not in evaluation.slices
    if evaluation.incomparable:
        lines += [f"Baseline: serving version {baseline_version} cannot be compared: the "
                  "candidate alone, no change threshold applies.", ""]
    else:
        lines += ["Baseline: none (cold start): the candidate alone, no change threshold "
                  "applies." if cold_start else f"Baseline: serving version {baseline_version}.",
                  ""]
    names = list(METRICS[evaluation.task].values())
    lines += ["## Thresholds (overall slice)", ""]
    if evaluation.checks:
        lines += ["| threshold | value | result |", "|---|---|---|"]
        lines += [f"| {c.threshold} | {c.shown} | {'pass' if c.passed else 'FAIL'} |"
                  for c in evaluation.checks]
    else:
        lines.append("None applies: nothing is blessed unless forced.")
    lines.append("")
    if evaluation.no_skill:
        lines += _no_skill_lines(evaluation.no_skill, evaluation.metrics.get("example_count"))

    def ordered(slices):  # overall first, then the slices by name
        return sorted(slices, key=lambda name: (name != "overall", name))

    candidate = evaluation.slices[CANDIDATE]
    if cold_start:
        lines += ["## Candidate", "", "| slice | " + " | ".join(names) + " |",
                  "|---" * (len(names) + 1) + "|"]
        for name in ordered(candidate):
            lines.append(f"| {name} | " + " | ".join(
                _cell(m, candidate[name].get(m)) for m in names) + " |")
        lines.append("")
        return "\n".join(lines)
    baseline = evaluation.slices[BASELINE]
    for metric in names:
        lines += [f"## {metric}", "",
                  f"| slice | candidate | baseline (v{baseline_version}) | candidate − baseline |",
                  "|---|---|---|---|"]
        for name in ordered(set(candidate) | set(baseline)):
            lines.append(
                f"| {name} | {_cell(metric, candidate.get(name, {}).get(metric))} | "
                f"{_cell(metric, baseline.get(name, {}).get(metric))} | "
                f"{_cell(metric, evaluation.diffs.get(name, {}).get(metric), signed=True)} |")
        lines.append("")
    return "\n".join(lines)
