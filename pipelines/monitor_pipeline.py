"""The monitoring pipeline: one monitor pass over the served model's records on a cluster, and
one CT run per drift episode, started through the KFP API.

    monitor ──(drift == True)──(start_run == True)──► trigger_run

``monitor`` reads the window of records the model server uploaded (``ctloop serve --record-dir
s3://...``), measures skew and drift as ``ctloop monitor`` does, writes the Markdown report and
the metrics for the KFP UI and decision.json, and claims the run of a new drift episode in the
trigger's state, an object next to the records, before anything is submitted. ``trigger_run``
then starts a run of the CT pipeline version by name (``ctloop submit``'s code) and records its
id in that state. Scheduled by ``ctloop schedule apply`` (a schedule with
``pipeline: ctloop-monitor`` in schedules.yaml).

kfp.local cannot run ``dsl.If`` (and there is no KFP API to submit to locally); the components
run there on their own, and ``ctloop monitor --trigger run|submit`` is the local loop.
"""

from kfp import dsl, kubernetes

from ctloop.components.monitor.component import monitor
from ctloop.components.trigger_run.component import trigger_run
from ctloop.monitor import CT_PIPELINE_NAME, MONITOR_PIPELINE_NAME
from ctloop.settings import (
    COOLDOWN_MINUTES,
    MODEL_NAME,
    MONITOR_MIN_ROWS,
    MONITOR_WINDOW,
    DriftThresholds,
)

PIPELINE_NAME = MONITOR_PIPELINE_NAME
# The components the pipeline is made of, in the order it runs them (compiled one by one too).
COMPONENTS = (monitor, trigger_run)
# The KFP API as a pipeline pod reaches it (standalone KFP's ml-pipeline service).
KFP_IN_CLUSTER = "http://ml-pipeline.kubeflow:8888"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Monitoring: the served model's recorded requests against its training data "
    "and the previous window (skew, drift, prediction, live metric); one CT run per drift "
    "episode, started through the KFP API.",
)
def monitor_pipeline(
    records_uri: str,
    registry_uri: str,
    model_name: str = MODEL_NAME,
    window: str = MONITOR_WINDOW,
    min_rows: int = MONITOR_MIN_ROWS,
    drift_threshold: float = DriftThresholds.drift,
    skew_threshold: float = DriftThresholds.skew,
    false_alarm_rate: float = DriftThresholds.false_alarm_rate,
    s3_endpoint_url: str = "",
    storage_secret: str = "mlpipeline-minio-artifact",
    cooldown_minutes: float = COOLDOWN_MINUTES,
    state_uri: str = "",
    ct_pipeline_name: str = CT_PIPELINE_NAME,
    ct_pipeline_version: str = "latest",
    ct_experiment: str = "ctloop",
    ct_parameters: dict = {},  # noqa: B006 - a KFP default value, never mutated
    kfp_host: str = KFP_IN_CLUSTER,
):
    """One monitor pass; on a new drift episode, one run of the CT pipeline.

    Args:
        records_uri: Where the model server records (``s3://BUCKET/PREFIX``).
        registry_uri: The registry the server serves from (``s3://``).
        model_name: The registered model name.
        window: The latest N rows (``"2000"``) or a duration (``"6h"``); the previous window is
            as long.
        min_rows: The fewest rows of a window judged.
        drift_threshold: Smallest Jensen-Shannon divergence from the previous window that is
            drift, once significant.
        skew_threshold: The same against the training data (skew).
        false_alarm_rate: The chance that unchanged traffic reports any drift or skew.
        s3_endpoint_url: S3-compatible endpoint of records and registry (``""``: boto3's).
        storage_secret: The Kubernetes Secret (keys ``accesskey``, ``secretkey``) the tasks get
            as boto3's standard variables, as the CT pipeline's tasks do.
        cooldown_minutes: No run starts within this many minutes of the last one.
        state_uri: The trigger's state (``""``: ``RECORDS/monitor/trigger-state.json``).
        ct_pipeline_name: The CT pipeline to run on drift (``""``: report only, never trigger).
        ct_pipeline_version: Its version name, or ``latest``.
        ct_experiment: The experiment of the triggered run.
        ct_parameters: The triggered run's parameters (those of the CT pipeline).
        kfp_host: The KFP API as seen from a pipeline pod.
    """
    measured = monitor(
        records_uri=records_uri,
        registry_uri=registry_uri,
        model_name=model_name,
        window=window,
        min_rows=min_rows,
        drift_threshold=drift_threshold,
        skew_threshold=skew_threshold,
        false_alarm_rate=false_alarm_rate,
        trigger_pipeline=ct_pipeline_name,
        cooldown_minutes=cooldown_minutes,
        state_uri=state_uri,
        s3_endpoint_url=s3_endpoint_url,
    ).set_caching_options(False)  # the records and the state move between identical inputs
    steps = [measured]
    with dsl.If(measured.outputs["drift"] == True, name="drift"):  # noqa: E712
        # Drift alone is not enough: one run per episode, after the cool-down (the claim).
        with dsl.If(measured.outputs["start_run"] == True, name="new-drift-episode"):  # noqa: E712
            started = trigger_run(
                kfp_host=kfp_host,
                pipeline_name=ct_pipeline_name,
                pipeline_version=ct_pipeline_version,
                experiment=ct_experiment,
                parameters=ct_parameters,
                state_uri=measured.outputs["trigger_state"],
                s3_endpoint_url=s3_endpoint_url,
            ).set_caching_options(False)
            steps.append(started)
    for step in steps:
        kubernetes.use_secret_as_env(step, secret_name=storage_secret, secret_key_to_env={
            "accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"})
