"""KFP component: TFDV statistics, schema, anomalies, drift and skew of the train/eval splits."""

from typing import Dict, List, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def validate_data(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    serving_schema: Input[Artifact],
    reference_statistics: Input[Artifact],
    label: str,
    statistics: Output[Artifact],
    schema: Output[Artifact],
    anomalies: Output[Artifact],
    drift_metrics: Output[Metrics],
    statistics_view: Output[HTML],
    drift_view: Output[HTML],
    anomalies_report: Output[Markdown],
    drift_threshold: float,
    skew_threshold: float,
    false_alarm_rate: float,
    stats_sample_rate: float,
    exclude: Optional[List[str]] = None,
    schema_uri: Optional[str] = None,
    anomaly_policy: Optional[Dict[str, str]] = None,
    beam_pipeline_args: Optional[List[str]] = None,
) -> bool:
    """Computes statistics per split, picks a schema, and finds anomalies, drift and skew.

    Schema precedence: ``schema_uri`` (curated) > the serving model's schema (the baseline's,
    from ``load_baseline``) > inferred from this span's train split (cold start). Drift is
    measured against the baseline's reference statistics (``load_baseline``'s: the latest
    earlier span whose data made a pushed version). Nothing is read from or written to the
    registry: rollout stores this span's statistics when it pushes a model trained on it.

    Args:
        train_data: The train split (metadata ``span``).
        eval_data: The eval split.
        serving_schema: The serving version's ``schema.pbtxt`` (``load_baseline``'s ``schema``;
            metadata ``version``, None on a cold start: no file).
        reference_statistics: ``train.stats.tfrecord`` of the span drift is measured against
            (``load_baseline``'s ``statistics``; metadata ``span``, None: no file, no drift).
        label: The label column.
        statistics: Output: ``<split>.stats.tfrecord`` files (DatasetFeatureStatisticsList);
            metadata ``span``, ``previous_span`` (the span drift was measured against) and
            ``beam`` (the Beam options statistics ran with: ``runner``, ``workers``,
            ``running_mode``, ``args``).
        schema: Output: the schema used, ``schema.pbtxt``; metadata ``source``.
        anomalies: Output: ``<split>.anomalies.pbtxt`` files; metadata ``anomaly_count``,
            ``blocking_count``, ``valid``, ``summary`` (the blocking anomalies in a line) and
            ``beam``.
        drift_metrics: Output: ``drift.<feature>`` and ``skew.<feature>`` distances.
        statistics_view: Output: TFDV's statistics view, this span vs the drift reference (train
            vs eval when there is none).
        drift_view: Output: every drift and skew distance with its threshold, as a table.
        anomalies_report: Output: anomalies, their policy and the fix; drift and skew.
        drift_threshold: Smallest Jensen-Shannon divergence of a feature from the drift
            reference (the latest earlier span a pushed model was trained on; on its bins) that
            is drift, once significant.
        skew_threshold: Smallest Jensen-Shannon divergence between train and eval that is
            skew, once significant.
        false_alarm_rate: The chance that unchanged data reports any drift or skew, over all
            features of one validation.
        stats_sample_rate: Share of rows statistics are computed on, in (0, 1].
        exclude: Columns that are not features (IDs, keys): not profiled, validated, or measured
            for drift and skew.
        schema_uri: A curated schema (text proto) that wins over the others (None or empty:
            none).
        anomaly_policy: Anomaly type (TFDV's, or CTLOOP_DRIFT, CTLOOP_SKEW, CTLOOP_NEW_VALUES)
            -> "block" or "warn"; unlisted types block.
        beam_pipeline_args: Beam options for TFDV (runner, workers, ...); empty: in-process
            (``ctloop.beam_options.resolve``, by the splits' row count).

    Returns:
        True when no blocking anomaly was found; False blocks training and deployment.
    """
    import os

    from ctloop import drift, drift_report
    from ctloop.components.validate_data import logic
    from ctloop.local import task_exit

    task_exit.install()

    span = int(train_data.metadata.get("span", 0))
    version = serving_schema.metadata.get("version")  # KFP hands numbers back as floats
    version = None if version is None else int(version)
    reference_span = reference_statistics.metadata.get("span")
    previous = None
    if reference_span is not None:
        previous = (int(reference_span),
                    os.path.join(reference_statistics.path, "train.stats.tfrecord"))
    os.makedirs(schema.path, exist_ok=True)
    result = logic.run(
        train_path=train_data.path,
        eval_path=eval_data.path,
        span=span,
        label=label,
        exclude=exclude or [],
        curated_schema=schema_uri or None,
        serving_schema=(os.path.join(serving_schema.path, "schema.pbtxt")
                        if version is not None else None),
        previous=previous,
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
    for name, value in drift_report.as_metrics(result.measurements).items():
        drift_metrics.log_metric(name, value)
    blocking = result.blocking
    summary = "no blocking anomaly" if not blocking else (
        f"{len(blocking)} blocking {'anomaly' if len(blocking) == 1 else 'anomalies'}: "
        + ", ".join(f"{a.feature} ({a.short})" for a in blocking[:3])
        + (", ..." if len(blocking) > 3 else ""))
    anomalies.metadata.update(anomaly_count=len(result.anomalies), blocking_count=len(blocking),
                              valid=result.valid, summary=summary, beam=result.beam)
    source = result.schema_source
    if version is not None and source.startswith("serving model"):
        source = f"serving model: version {version}"
    schema.metadata["source"] = source
    statistics.metadata.update(span=span, previous_span=result.previous_span, beam=result.beam)
    print(f"data validation: Beam {result.beam['runner']}, {result.beam['workers']} worker(s) "
          f"({result.beam['running_mode']}); options {result.beam['args']}")
    print(f"data validation: {'passed' if result.valid else 'blocked'} ({summary})")
    return result.valid
