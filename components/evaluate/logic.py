"""Evaluate: TFMA on the eval split, candidate vs the serving model, and the blessing.

TFMA runs inference itself on both SavedModels (``tf_generic`` models whose ``serving_default``
signature takes raw features, fed from Arrow record batches by column name), computes metrics
overall and per slice, and validates the thresholds: a value threshold on the candidate's AUC and,
when a baseline serves, a change threshold against it. Thresholds judge the overall slice.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ctloop import beam_options, contract
from ctloop.components.train.logic import FeatureSpec, to_inputs
from ctloop.errors import ConfigError

CANDIDATE, BASELINE = "candidate", "baseline"
METRICS = ("ExampleCount", "AUC", "BinaryAccuracy", "Precision", "Recall")
BATCH_ROWS = 1000


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Blessing thresholds on AUC. None disables one; with both None nothing is blessed."""

    min_auc: float | None = 0.7
    max_auc_decrease: float | None = 0.01

    def __post_init__(self):
        if self.min_auc is not None and not 0.0 <= self.min_auc <= 1.0:
            raise ConfigError(f"min_auc {self.min_auc} is out of range: use a value in [0, 1]")
        if self.max_auc_decrease is not None and not 0.0 <= self.max_auc_decrease <= 1.0:
            raise ConfigError(
                f"max_auc_decrease {self.max_auc_decrease} is out of range: use a value in [0, 1] "
                "(0 = the candidate may not be worse than the serving model at all)"
            )


@dataclasses.dataclass(frozen=True)
class Evaluation:
    blessed: bool
    reason: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    slices: dict[str, dict[str, dict[str, float]]]  # model -> slice name -> metrics


def load_features(model_dir: str | Path) -> list[FeatureSpec]:
    return [FeatureSpec(n, d) for n, d in contract.read_features(model_dir).items()]


def eval_config(label: str, thresholds: Thresholds, with_baseline: bool,
                slice_features: list[str]):
    import tensorflow_model_analysis as tfma

    def spec(name: str, is_baseline: bool):
        return tfma.ModelSpec(
            name=name, signature_name=contract.SERVING_SIGNATURE, label_key=label,
            prediction_key=contract.OUTPUT_KEY, model_type="tf_generic", is_baseline=is_baseline,
        )

    auc_threshold = tfma.MetricThreshold()
    if thresholds.min_auc is not None:
        auc_threshold.value_threshold.lower_bound.value = thresholds.min_auc
    # A change threshold needs a baseline: on cold start only the value threshold applies.
    if with_baseline and thresholds.max_auc_decrease is not None:
        auc_threshold.change_threshold.direction = tfma.MetricDirection.HIGHER_IS_BETTER
        auc_threshold.change_threshold.absolute.value = -thresholds.max_auc_decrease
    overall = tfma.SlicingSpec()
    metrics = [
        tfma.MetricConfig(
            class_name=name,
            per_slice_thresholds=[
                tfma.PerSliceMetricThreshold(slicing_specs=[overall], threshold=auc_threshold)
            ] if name == "AUC" and auc_threshold.ByteSize() else [],
        )
        for name in METRICS
    ]
    return tfma.EvalConfig(
        model_specs=[spec(CANDIDATE, False)] + ([spec(BASELINE, True)] if with_baseline else []),
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
        slicing_specs=[overall] + [tfma.SlicingSpec(feature_keys=[f]) for f in slice_features],
    )


def record_batches(frame: pd.DataFrame, features: list[FeatureSpec], label: str
                   ) -> list[pa.RecordBatch]:
    """Eval rows as TFMA reads them: one-element list columns, in the signature's dtypes."""
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
        columns.append(pa.ListArray.from_arrays(
            offsets, pa.array(frame[label].to_numpy(np.int64)[rows])))
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
) -> Evaluation:
    """Evaluates the candidate (and the baseline, if any) and decides the blessing."""
    import apache_beam as beam
    import tensorflow_model_analysis as tfma
    from apache_beam.options.pipeline_options import PipelineOptions

    slice_features = slice_features or []
    with_baseline = baseline_dir is not None
    config = eval_config(label, thresholds, with_baseline, slice_features)
    features = {f.name: f for f in load_features(model_dir)}
    if with_baseline:
        features = {**{f.name: f for f in load_features(baseline_dir)}, **features}
    frame = pd.read_parquet(eval_path)
    unknown = sorted(set(slice_features) - set(frame.columns))
    if unknown:
        raise ConfigError(f"slice features {unknown} are not columns of the eval data; fix them")
    for name in slice_features:
        features.setdefault(name, FeatureSpec(name, contract.CATEGORICAL))
    batches = record_batches(frame, list(features.values()), label)

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

    if with_baseline:
        slices = {m: _slice_metrics(output_dir, m) for m in (CANDIDATE, BASELINE)}
    else:  # with a single model, TFMA keys its metrics by no model name
        slices = {CANDIDATE: _slice_metrics(output_dir, None)}
    blessed, reason = bless(tfma.load_validation_result(output_dir), thresholds, with_baseline)
    return Evaluation(blessed, reason, slices[CANDIDATE]["overall"],
                      slices.get(BASELINE, {}).get("overall", {}), slices)


def bless(validation, thresholds: Thresholds, with_baseline: bool) -> tuple[bool, str]:
    """The blessing and its reason, from TFMA's ValidationResult."""
    applied = []
    if thresholds.min_auc is not None:
        applied.append(f"AUC >= {thresholds.min_auc}")
    if with_baseline and thresholds.max_auc_decrease is not None:
        applied.append(f"AUC >= serving model's AUC - {thresholds.max_auc_decrease}")
    if not applied:
        # Fail safe, as TFX's Evaluator: with nothing to check, TFMA would pass anything.
        return False, "no threshold applies: set min_auc (and max_auc_decrease) to bless models"
    if validation.validation_ok:
        return True, "passed " + " and ".join(applied)
    failures = [
        f"{_metric_label(f.metric_key)} = {f.metric_value.double_value.value:.4f} fails "
        f"{_threshold_label(f.metric_threshold)}"
        for per_slice in validation.metric_validations_per_slice
        for f in per_slice.failures
    ]
    return False, "; ".join(failures) or "TFMA validation failed without details"


def _metric_label(key) -> str:
    return f"{key.name} change vs serving model" if key.is_diff else key.name


def _threshold_label(threshold) -> str:
    if threshold.HasField("change_threshold"):
        return f"change >= {threshold.change_threshold.absolute.value:g}"
    return f">= {threshold.value_threshold.lower_bound.value:g}"


def _slice_metrics(output_dir: str, model_name: str | None) -> dict[str, dict[str, float]]:
    import tensorflow_model_analysis as tfma

    result = tfma.load_eval_result(output_dir, model_name=model_name)
    out = {}
    for slice_key, by_output in result.slicing_metrics:
        name = "overall" if not slice_key else ", ".join(
            f"{k}={v.decode() if isinstance(v, bytes) else v}" for k, v in slice_key)
        # Undefined metrics (e.g. precision with no positive prediction) come back as "NaN".
        values = {
            metric: float(value["doubleValue"])
            for metric, value in by_output[""][""].items()
            if "doubleValue" in value and not metric.endswith("_diff")
        }
        out[name] = {k: v for k, v in values.items() if not math.isnan(v)}
    return out


def report_markdown(evaluation: Evaluation, baseline_version: int | None, span: Any) -> str:
    """Candidate vs baseline, overall and per slice, and the verdict, for the KFP UI."""
    names = ["example_count", "auc", "binary_accuracy", "precision", "recall"]
    verdict = "BLESSED" if evaluation.blessed else "NOT BLESSED"
    baseline = f"serving version {baseline_version}" if baseline_version else "none (cold start)"
    lines = [f"# Model evaluation: span {span}", "", f"**{verdict}**: {evaluation.reason}", "",
             f"Baseline: {baseline}.", ""]
    for model, slices in evaluation.slices.items():
        lines += [f"## {model}", "", "| slice | " + " | ".join(names) + " |",
                  "|---" * (len(names) + 1) + "|"]
        for slice_name, values in sorted(slices.items(), key=lambda kv: kv[0] != "overall"):
            cells = [f"{values[m]:.4f}" if m in values else "" for m in names]
            lines.append(f"| {slice_name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
