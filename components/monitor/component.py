"""KFP component: one monitor pass over the served model's records, for a pipeline or a
recurring run on a cluster."""

from typing import NamedTuple, Optional

from kfp import dsl
from kfp.dsl import Artifact, Markdown, Metrics, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def monitor(
    records_uri: str,
    registry_uri: str,
    model_name: str,
    window: str,
    min_rows: int,
    drift_threshold: float,
    skew_threshold: float,
    false_alarm_rate: float,
    trigger_pipeline: str,
    cooldown_minutes: float,
    report: Output[Markdown],
    metrics: Output[Metrics],
    decision: Output[Artifact],
    state_uri: Optional[str] = None,
    s3_endpoint_url: Optional[str] = None,
) -> NamedTuple("MonitorOutputs", [("drift", bool), ("start_run", bool), ("trigger_state", str)]):
    """Compares the latest window of served records with the serving version's training data
    (skew) and the previous window (drift), as ``ctloop monitor`` does, and decides whether this
    pass opens a drift episode that starts a CT run.

    Run it uncached (``set_caching_options(False)``): the records and the trigger's state change
    between runs with the same inputs.

    Args:
        records_uri: The record location of ``ctloop serve --record-dir``: ``s3://BUCKET/PREFIX``
            on a cluster (a folder works where the task can read it).
        registry_uri: The registry the server serves from (its serving version is monitored).
        model_name: The registered model name.
        window: The served rows compared: the latest N rows (``"2000"``) or a duration ending at
            the latest record (``"30m"``, ``"6h"``, ``"1d"``); the previous window is as long.
        min_rows: The fewest rows of a window judged; fewer give no decision.
        drift_threshold: Smallest Jensen-Shannon divergence from the previous window that is
            drift, once significant.
        skew_threshold: Smallest Jensen-Shannon divergence from the training data that is skew,
            once significant.
        false_alarm_rate: The chance that unchanged traffic reports any drift or skew.
        trigger_pipeline: The CT pipeline a drift episode starts a run of (recorded in the
            state); ``""``: report only, no trigger state is read or written.
        cooldown_minutes: No run starts within this many minutes of the last one.
        report: The Markdown report (decision, window, prediction, latency, live metric, every
            measurement).
        metrics: ``drift`` (0/1), ``rows``, ``drift_<feature>`` and ``skew_<feature>`` (their
            Jensen-Shannon divergence), ``prediction_mean``, ``live_<metric>``.
        decision: A folder holding ``decision.json``: drift, the features, version, span, rows,
            and what the trigger decided.
        state_uri: The trigger's state (drift episode, last run); None:
            ``RECORDS/monitor/trigger-state.json``, an object next to the records.
        s3_endpoint_url: An S3-compatible endpoint (MinIO, SeaweedFS); None: boto3's default.
            Credentials come from boto3's standard chain only.

    Returns:
        drift: Whether the window drifted (or skewed) on enough rows.
        start_run: Whether this pass opened a drift episode: the caller starts the CT run now.
        trigger_state: Where the trigger's state is, for the task that submits the run.
    """
    import json
    import os
    from collections import namedtuple

    from ctloop import drift as drift_measures
    from ctloop.components.monitor import logic

    done = logic.run(records_uri, registry_uri, model_name, window, min_rows,
                     drift_measures.Thresholds(drift_threshold, skew_threshold, false_alarm_rate),
                     trigger_pipeline or None, cooldown_minutes, state_uri or None,
                     s3_endpoint_url or None)
    with open(report.path, "w", encoding="utf-8") as handle:
        handle.write(done.markdown)
    for name, value in done.metrics.items():
        metrics.log_metric(name, value)
    os.makedirs(decision.path, exist_ok=True)
    with open(os.path.join(decision.path, "decision.json"), "w", encoding="utf-8") as handle:
        json.dump(done.decision, handle, indent=2)
    decision.metadata.update({"drift": done.result.drifted, "features": done.result.features})
    outputs = namedtuple("MonitorOutputs", ["drift", "start_run", "trigger_state"])
    return outputs(done.result.drifted, done.start_run, done.state_uri)
