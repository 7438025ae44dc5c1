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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from ctloop import beam_options, contract
from ctloop.components.evaluate import fairness as fair
from ctloop.components.evaluate.no_skill import (
    Check,
    NoSkill,
    no_skill,
    predictions,
)
from ctloop.contract import FeatureSpec
from ctloop.data import splits
from ctloop.errors import ConfigError
from ctloop.settings import (
    BLESS_ON_THRESHOLDS,
    JUDGED,
    MAX_GROUPS,
    REQUIRE_BASELINE,
    Fairness,
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
BATCH_ROWS = 1024  # rows per record batch TFMA reads: an eighth of a chunk splits.READ_ROWS
# ROC thresholds 0, 0.01, ..., 1: a smooth curve that keeps KFP's metadata small. Even, so that
# MATRIX_THRESHOLD, the one binary_accuracy, precision and recall use, is among them.
ROC_THRESHOLDS = 100
MATRIX_THRESHOLD = 0.5
FORCED_PREFIX = "FORCE-BLESSED: "



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
    fairness: fair.Result | None = None  # None: no sensitive feature
    beam: dict | None = None  # the Beam options TFMA ran with (beam_options.describe)

    @property
    def forced(self) -> bool:
        return self.force_reason is not None


def load_features(model_dir: str | Path) -> list[FeatureSpec]:
    return [FeatureSpec(n, d) for n, d in contract.read_features(model_dir).items()]


def eval_config(label: str, thresholds: Thresholds, with_baseline: bool,
                slice_features: list[str], task: str = contract.BINARY,
                extra_metrics: tuple[str, ...] = ()):
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
        for name in [*METRICS[task], *extra_metrics]
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


def record_batches(split: splits.Split, task: str = contract.BINARY, files: list[int] | None = None
                   ) -> Iterator[pa.RecordBatch]:
    """The split's rows as TFMA reads them, ``BATCH_ROWS`` at a time, read chunk by chunk (the
    files in ``files`` order, None: all): one-element list columns of the split's features, in
    the signature's dtypes; the label as ingest encoded it (a class index, or a number for
    regression)."""
    dtype = np.float32 if task == contract.REGRESSION else np.int64
    for inputs, labels in split.chunks(files):
        for start in range(0, len(labels), BATCH_ROWS):
            rows = slice(start, start + BATCH_ROWS)
            size = len(labels[rows])
            offsets = pa.array(np.arange(size + 1, dtype=np.int32))
            columns, names = [], []
            for feature in split.features:
                values = inputs[feature.name][rows]
                array = (pa.array(values, type=pa.float32()) if feature.dtype == contract.NUMERIC
                         else pa.array(values.tolist(), type=pa.binary()))
                columns.append(pa.ListArray.from_arrays(offsets, array))
                names.append(feature.name)
            columns.append(pa.ListArray.from_arrays(offsets, pa.array(labels[rows].astype(dtype))))
            names.append(split.label)
            yield pa.RecordBatch.from_arrays(columns, names)


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
    fairness: Fairness | None = None,
) -> Evaluation:
    """Evaluates the candidate (and the baseline, if any) and decides the blessing; with
    ``fairness``' sensitive features, per group too, in the same TFMA pass."""
    import apache_beam as beam
    import tensorflow_model_analysis as tfma
    from apache_beam.options.pipeline_options import PipelineOptions

    policy, fairness = policy or Policy(), fairness or Fairness()
    sensitive = list(fairness.sensitive_features)
    task, categories = contract.read_task(model_dir)
    fairness.check_task(task)
    slice_features = list(dict.fromkeys([*(slice_features or []), *sensitive]))
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
    # Off costs nothing: the counts are computed only for groups to compare.
    counts = tuple(fair.COUNTS) if sensitive and task == contract.BINARY else ()
    config = eval_config(label, thresholds, with_baseline, slice_features, task, counts)
    features = {f.name: f for f in load_features(model_dir)}
    if with_baseline:
        features = {**{f.name: f for f in load_features(baseline_dir)}, **features}
    unknown = sorted(set(slice_features) - set(splits.columns(eval_path)))
    if unknown:
        raise ConfigError(f"slice or sensitive features {unknown} are not columns of the eval "
                          "data; fix them")
    for name in sensitive:
        groups = splits.column(eval_path, name).nunique(dropna=False)
        if groups > MAX_GROUPS:
            raise ConfigError(
                f"sensitive feature {name!r} has {groups} distinct values in the eval split, "
                f"more than {MAX_GROUPS} groups: bin it into a few categories upstream (e.g. age "
                "bands) and name that column")
    for name in slice_features:
        features.setdefault(name, FeatureSpec(name, contract.CATEGORICAL))
    split = splits.Split.of(eval_path, list(features.values()), label)

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
    beam_pipeline_args = beam_options.resolve(beam_pipeline_args, split.rows)
    options = PipelineOptions(beam_pipeline_args)
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            # The rows are read where the work runs, a file at a time: never held whole.
            | "EvalFiles" >> beam.Create(range(len(split.files)), reshuffle=False)
            | "EvalRows" >> beam.FlatMap(lambda file: record_batches(split, task, [file]))
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
        # The candidate's own inputs: its signature takes no baseline or slice column.
        labels, predicted = predictions(
            model_dir, dataclasses.replace(split, features=load_features(model_dir)).chunks())
        skill = no_skill(task, labels, predicted, categories)
        applied.insert(0, skill.check())  # in the value threshold's place
    groups = None
    if sensitive:
        groups = fair.measure(fairness, slices, task, CANDIDATE,
                              BASELINE if with_baseline else None)
        applied += fair.checks(fairness, groups, with_baseline)
        for by_slice in [*slices.values(), diffs]:  # counts are the groups' input, not metrics
            for values in by_slice.values():
                for name in fair.COUNTS.values():
                    values.pop(name, None)
    tfma_blessed, tfma_reason = bless(validated, applied, task)
    blessed, reason = decide(tfma_blessed, tfma_reason, policy, baseline_dir is not None,
                             incomparable)
    views = None if task == contract.REGRESSION else _views(candidate, categories, task)
    return Evaluation(
        blessed, reason, metrics, slices.get(BASELINE, {}).get("overall", {}), slices, diffs,
        applied, tfma_blessed, tfma_reason, policy.force_reason, views, task, incomparable,
        skill, groups, beam_options.describe(beam_pipeline_args))


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


