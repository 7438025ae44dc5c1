"""KFP component: TFDV statistics, schema, anomalies, drift and skew of the train/eval splits."""

from typing import Dict, List, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def validate_data(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    label: str,
    registry_uri: str,
    model_name: str,
    statistics: Output[Artifact],
    schema: Output[Artifact],
    anomalies: Output[Artifact],
    drift_metrics: Output[Metrics],
    statistics_view: Output[HTML],
    drift_view: Output[HTML],
    anomalies_report: Output[Markdown],
    exclude: Optional[List[str]] = None,
    schema_uri: Optional[str] = None,
    drift_threshold: float = 0.03,
    skew_threshold: float = 0.03,
    false_alarm_rate: float = 0.01,
    anomaly_policy: Optional[Dict[str, str]] = None,
    stats_sample_rate: float = 1.0,
    beam_pipeline_args: Optional[List[str]] = None,
    s3_endpoint_url: Optional[str] = None,
) -> bool:
    """Computes statistics per split, picks a schema, and finds anomalies, drift and skew.

    Schema precedence: ``schema_uri`` (curated) > the serving model's schema in the registry >
    inferred from this span's train split (cold start). Drift is measured against the train
    statistics of the latest earlier span stored in the registry; this span's are stored after.

    Args:
        train_data: The train split (metadata ``span``).
        eval_data: The eval split.
        label: The label column.
        registry_uri: The model registry root: serving schema and earlier spans' statistics.
        model_name: The model's name in the registry.
        statistics: Output: ``<split>.stats.tfrecord`` files (DatasetFeatureStatisticsList).
        schema: Output: the schema used, ``schema.pbtxt``; metadata ``source``.
        anomalies: Output: ``<split>.anomalies.pbtxt`` files; metadata ``anomaly_count``,
            ``blocking_count``, ``valid``.
        drift_metrics: Output: ``drift.<feature>`` and ``skew.<feature>`` distances.
        statistics_view: Output: TFDV's statistics view, this span vs the previous one (train vs
            eval on the first span).
        drift_view: Output: every drift and skew distance with its threshold, as a table.
        anomalies_report: Output: anomalies, their policy and the fix; drift and skew.
        exclude: Columns that are not features: no drift or skew is measured on them.
        schema_uri: A curated schema (text proto) that wins over the others (None or empty:
            none).
        drift_threshold: Smallest Jensen-Shannon divergence of a feature from the previous
            span (on the previous span's bins) that is drift, once significant.
        skew_threshold: Smallest Jensen-Shannon divergence between train and eval that is
            skew, once significant.
        false_alarm_rate: The chance that unchanged data reports any drift or skew, over all
            features of one validation.
        anomaly_policy: TFDV anomaly type -> "block" or "warn"; unlisted types block.
        stats_sample_rate: Share of rows statistics are computed on, in (0, 1].
        beam_pipeline_args: Beam options for TFDV (runner, workers, ...).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` registry (None: boto3's).

    Returns:
        True when no blocking anomaly was found; False blocks deployment.
    """
    import os

    from ctloop import drift, drift_report
    from ctloop.components.validate_data import logic
    from ctloop.local import task_exit
    from ctloop.registry import open_registry

    task_exit.install()

    registry = open_registry(registry_uri, model_name, s3_endpoint_url)
    serving = registry.serving()
    span = int(train_data.metadata.get("span", 0))
    previous = registry.previous_statistics(span) if span else None
    os.makedirs(schema.path, exist_ok=True)
    result = logic.run(
        train_path=train_data.path,
        eval_path=eval_data.path,
        span=span,
        label=label,
        exclude=exclude or [],
        curated_schema=schema_uri or None,
        serving_schema=str(serving.schema_path) if serving else None,
        previous=(previous[0], str(previous[1])) if previous else None,
        outputs=logic.OutputPaths(
            stats_dir=statistics.path,
            schema=os.path.join(schema.path, "schema.pbtxt"),
            anomalies_dir=anomalies.path,
            statistics_html=statistics_view.path,
            drift_html=drift_view.path,
            report_md=anomalies_report.path,
        ),
        thresholds=drift.Thresholds(drift_threshold, skew_threshold, false_alarm_rate),
        policy=anomaly_policy or {},
        beam_pipeline_args=beam_pipeline_args,
        sample_rate=stats_sample_rate,
    )
    if span:
        registry.save_statistics(span, os.path.join(statistics.path, "train.stats.tfrecord"))
    for name, value in drift_report.as_metrics(result.measurements).items():
        drift_metrics.log_metric(name, value)
    anomalies.metadata.update(anomaly_count=len(result.anomalies),
                              blocking_count=len(result.blocking), valid=result.valid)
    schema.metadata["source"] = result.schema_source
    statistics.metadata["previous_span"] = result.previous_span
    return result.valid
