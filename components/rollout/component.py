"""KFP component: push a validated, blessed model into the registry and put it into service."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def rollout(
    model: Input[Model],
    schema: Input[Artifact],
    statistics: Input[Artifact],
    train_data: Input[Dataset],
    anomalies: Input[Artifact],
    baseline: Input[Model],
    blessing: Input[Artifact],
    infra_blessing: Input[Artifact],
    data_valid: bool,
    registry_uri: str,
    model_name: str,
    eval_data: Input[Dataset],
    pushed_model: Output[Artifact],
    report: Output[Markdown],
    target: str,
    kserve_namespace: str,
    kserve_mode: str,
    kserve_service_account: str,
    canary_percent: int,
    canary_requests: int,
    canary_max_error_rate: float,
    canary_max_p99_ms: float,
    ready_timeout_s: float,
    stage: str,
    strategy: str,
    shadow_requests: int,
    shadow_min_agreement: float,
    shadow_max_error_rate: float,
    shadow_max_p99_ms: float,
    green_requests: int,
    green_max_p99_ms: float,
    serving_url: Optional[str] = None,
    serving_image: Optional[str] = None,
    s3_endpoint_url: Optional[str] = None,
    serving_record_uri: Optional[str] = None,
) -> bool:
    """Pushes the model as a new registry version if the data is valid and the model is blessed
    (evaluation) and infra-blessed (it served within the SLO), then puts it into service on
    ``target``, canary first when a version serves there.

    Otherwise nothing moves: the serving version keeps serving and the reason is recorded. The
    registry's serving pointer names the new version only once it serves all traffic, and only
    over the baseline the run was judged against (``load_baseline``'s version): another run's
    version serving since makes this run's judgement stale, and nothing is pushed.

    The only task that writes to the registry: with the version, it stores this span's train
    statistics, the drift reference of the spans after it (so only a span whose data passed
    validation and made a pushed model becomes one).

    Args:
        model: The trained SavedModel.
        schema: The schema the data was validated with; stored with the version.
        statistics: validate_data's statistics (``train.stats.tfrecord``), stored for the span
            when the version is pushed.
        train_data: The train split; its span and fingerprint go into the run record.
        anomalies: validate_data's anomalies (metadata ``blocking_count``).
        baseline: ``load_baseline``'s model (metadata ``version``, None on a cold start;
            ``fingerprint``; ``statistics_span``): the serving version this run was judged
            against, the only one the new version may replace.
        blessing: evaluate's blessing (metadata ``blessed``, ``reason``, ``metrics``,
            ``forced``, ``force_reason``).
        infra_blessing: infra_validate's verdict (metadata ``infra_blessed`` and ``reason``).
        data_valid: validate_data's verdict.
        registry_uri: The model registry root.
        model_name: The model's name in the registry and its InferenceService's name.
        eval_data: The eval split: its rows are the canary's requests.
        pushed_model: Output: metadata ``pushed``, ``promoted``, ``version``, ``reason``,
            ``previous_version`` and the target's ``deployment`` record.
        report: Output: the decision, and on ``kserve`` the readiness steps and the probe.
        target: ``local``: the registry's pointer is what serves (``ctloop serve --registry``
            follows it). ``kserve``: the InferenceService ``model_name`` in
            ``kserve_namespace``, serving the model artifact.
        serving_url: ``local``: a running server that follows this registry: the new version
            takes ``canary_percent`` % of its requests first. None or empty: promote directly.
        kserve_namespace: ``kserve``: the serving namespace.
        kserve_mode: ``kserve``: ``Standard`` (canary by ``spec.canary``) or ``Knative`` (by
            ``canaryTrafficPercent``).
        kserve_service_account: ``kserve``: the ServiceAccount with the storage credentials.
        serving_image: ``kserve``: the ctloop serving image (None or empty: this release's).
        canary_percent: The canary's share of requests.
        canary_requests: Requests sent to the canary.
        canary_max_error_rate: Largest share of failed requests allowed during the canary.
        canary_max_p99_ms: Largest p99 latency of the canary's answers.
        ready_timeout_s: ``kserve``: longest wait for each apply to become ready.
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` registry (None: boto3's);
            on ``kserve``, also of ``serving_record_uri``.
        serving_record_uri: ``kserve``: ``s3://BUCKET/PREFIX`` the predictor records served
            requests to, as given (the monitoring pipeline's ``records_uri``; credentials from
            ``kserve_service_account``'s Secret). None or empty: no recording. Unused on
            ``local``, where ``ctloop serve --record-dir`` records.
        stage: The stage this run deploys into: ``production``, or ``staging`` (a person then
            approves the version for production with ``ctloop promote``; the report gives the
            command). ``serving_url`` must be the server following that stage (``ctloop serve
            --stage``); on ``kserve``, staging is the InferenceService ``<model_name>-staging``.
        strategy: ``canary`` (a share of the clients), ``shadow`` (a copy of the requests,
            answers compared, no client sees them) or ``blue_green`` (loaded beside, checked at
            its version's route, then all traffic at once; the old version kept warm).
            ``local`` only for shadow and blue-green.
        shadow_requests: ``shadow``: requests sent while the shadow runs.
        shadow_min_agreement: ``shadow``: least share of rows whose answers agree.
        shadow_max_error_rate: ``shadow``: largest share of requests the shadow may fail.
        shadow_max_p99_ms: ``shadow``: largest p99 of the shadow's own scoring.
        green_requests: ``blue_green``: checks sent to the green at its version's route.
        green_max_p99_ms: ``blue_green``: largest p99 of those checks.

    Returns:
        Whether the new version serves in ``stage`` now.
    """
    import json
    import os

    from ctloop.components.rollout import logic
    from ctloop.contract import serving_target
    from ctloop.errors import ConfigError
    from ctloop.local import task_exit
    from ctloop.registry import record as run_record
    from ctloop.serving import canary

    task_exit.install()

    def _version(value):  # KFP metadata is a protobuf Struct: numbers come back as floats
        return None if value is None else int(value)

    from ctloop.registry import check_stage
    from ctloop.settings import Release

    slo = canary.CanarySLO(percent=canary_percent, requests=canary_requests,
                           max_error_rate=canary_max_error_rate, max_p99_ms=canary_max_p99_ms)
    check_stage(stage)
    settings = Release(strategy=strategy, shadow_requests=shadow_requests,
                       min_shadow_compared=min(Release.min_shadow_compared, shadow_requests),
                       min_agreement=shadow_min_agreement,
                       max_shadow_error_rate=shadow_max_error_rate,
                       max_shadow_p99_ms=shadow_max_p99_ms, green_requests=green_requests,
                       max_green_p99_ms=green_max_p99_ms)
    # Everything that can be checked before the push is: a bad setting or an unreachable
    # cluster fails here, not after a version was written.
    if serving_target(target) == "kserve":
        from ctloop import kserve

        if strategy != "canary":
            raise ConfigError(
                f"strategy {strategy!r} on target 'kserve' is not run by this component: use "
                "'canary', or target 'local'; the cluster manifests of shadow and blue-green "
                "are ctloop.kserve.release's")
        config = kserve.ServiceConfig(
            name=model_name if stage == "production" else f"{model_name}-{stage}",
            namespace=kserve_namespace, mode=kserve_mode,
            service_account=kserve_service_account, image=serving_image or kserve.SERVING_IMAGE,
            record_uri=serving_record_uri or None, s3_endpoint_url=s3_endpoint_url or None)
        deploy = logic.kserve_rollout(kserve.connect(), config, model.uri,
                                      canary.rows(eval_data.path, model.path), slo,
                                      ready_timeout_s, stage=stage)
    elif serving_url:
        if "://" in registry_uri:
            raise ConfigError(f"serving_url {serving_url!r} needs a local registry, not "
                              f"{registry_uri!r}: a local server follows a local registry")
        rows = canary.rows(eval_data.path, model.path)
        deploy = (logic.local_canary(serving_url, rows, slo, stage) if strategy == "canary"
                  else logic.local_shadow(serving_url, rows, settings, stage)
                  if strategy == "shadow"
                  else logic.local_blue_green(serving_url, rows, settings, stage))
    else:
        deploy = None  # nothing serves to canary against: promoted directly
    # The run record: what the version was made from (data, parameters, code, environment),
    # what it measured and what it was judged against.
    baseline_version = _version(baseline.metadata.get("version"))
    span = train_data.metadata.get("span")
    record = {
        "span": span,
        "spans": train_data.metadata.get("spans"),
        "data_fingerprint": train_data.metadata.get("fingerprint"),
        "files": train_data.metadata.get("files"),
        "parameters": dict(model.metadata.get("parameters", {})),
        "devices": model.metadata.get("devices"),
        "metrics": blessing.metadata.get("metrics", {}),
        "baseline_version": baseline_version,
        "baseline": {"version": baseline_version,
                     "fingerprint": baseline.metadata.get("fingerprint"),
                     "drift_reference_span": _version(baseline.metadata.get("statistics_span"))},
        "blessing": {k: blessing.metadata.get(k) for k in ("reason", "forced", "force_reason")},
        "infra": {k: infra_blessing.metadata[k] for k in ("p50_ms", "p99_ms", "rps")
                  if k in infra_blessing.metadata},
        "target": target,
        **run_record.provenance(),
    }
    result = logic.run(
        model_dir=model.path,
        schema_path=os.path.join(schema.path, "schema.pbtxt"),
        data_valid=data_valid,
        anomaly_count=int(anomalies.metadata.get("blocking_count", 0)),
        blessed=blessing.metadata.get("blessed"),
        blessing_reason=str(blessing.metadata.get("reason", "")),
        infra_blessed=infra_blessing.metadata.get("infra_blessed"),
        infra_reason=str(infra_blessing.metadata.get("reason", "")),
        baseline_version=baseline_version,
        registry_uri=registry_uri,
        model_name=model_name,
        record=record,
        deploy=deploy,
        s3_endpoint_url=s3_endpoint_url,
        statistics=(int(span), os.path.join(statistics.path, "train.stats.tfrecord"))
        if span else None,
        stage=stage,
    )
    outcome = {
        "pushed": result.pushed, "promoted": result.promoted, "version": result.version,
        "reason": result.reason, "previous_version": result.previous_version,
        "stage": stage, "strategy": strategy, "deployment": result.details,
        "decision": result.details.get("decision"),
    }
    pushed_model.metadata.update(outcome)
    with open(pushed_model.path, "w") as handle:
        json.dump(outcome, handle, indent=2)
    with open(report.path, "w") as handle:
        handle.write(logic.report_markdown(result, model_name))
    return result.promoted
