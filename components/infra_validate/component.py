"""KFP component: serve the candidate in the real serving runtime; check answers and speed."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def infra_validate(
    model: Input[Model],
    eval_data: Input[Dataset],
    blessing: Input[Artifact],
    blessed: bool,
    model_name: str,
    infra_blessing: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    server_log: Output[Artifact],
    target: str,
    kserve_namespace: str,
    kserve_mode: str,
    kserve_service_account: str,
    max_p99_ms: float,
    min_rps: float,
    tolerance: float,
    concurrency: int,
    requests: int,
    startup_timeout_s: float,
    serving_python: Optional[str] = None,
    serving_image: Optional[str] = None,
) -> bool:
    """Starts the candidate in the KServe model server and tests it like a deployment would.

    Fail-safe: a server that does not start, errs, disagrees with the model or misses the SLO
    is not infra-blessed, and rollout then pushes nothing.

    A gate: with ``blessed`` False (evaluation did not bless the model, or skipped it), no
    server is started; the task says so in its log and in its outputs' metadata ``skipped``.

    Args:
        model: The candidate SavedModel.
        eval_data: The eval split: its rows are the requests.
        blessing: evaluate's blessing (metadata ``reason``, or ``skipped``: why not blessed).
        blessed: evaluate's verdict; False skips the validation (not infra-blessed).
        model_name: The model's name in request paths (and its InferenceService's name).
        infra_blessing: Output: metadata ``infra_blessed``, ``reason`` and the measurements.
        metrics: Output: startup_s, max_abs_diff, p50_ms, p99_ms, rps.
        report: Output: every check, measured vs required.
        server_log: Output: the model server's log (``local`` target); on ``kserve`` a note
            where the InferenceService's logs are; when skipped, that no server started.
        target: ``local``: a server process of the serving environment (``serving_python``).
            ``kserve``: a short-lived InferenceService ``<model_name>-infra-<run token>``
            beside the serving one, from the model artifact, deleted afterwards.
        kserve_namespace: ``kserve``: the serving namespace.
        kserve_mode: ``kserve``: ``Standard`` or ``Knative``.
        kserve_service_account: ``kserve``: the ServiceAccount with the storage credentials.
        max_p99_ms: SLO: p99 latency of single-row requests under ``concurrency`` clients.
        min_rps: SLO: requests per second under ``concurrency`` clients.
        tolerance: Largest difference between served and in-process predictions, relative to
            the value beyond magnitude 1 (|diff| <= tolerance x max(1, |value|)).
        concurrency: Clients sending at once during the load test.
        requests: Single-row requests in the load test.
        startup_timeout_s: Deadline for the server to become ready. On a fresh cluster the
            candidate's first pod pulls the storage initializer and the model first; a pod that
            cannot pull its image or keeps crashing fails at once, not at the deadline.
        serving_python: ``local``: the python of the serving environment (kserve installed).
        serving_image: ``kserve``: the ctloop serving image (None or empty: this release's).

    Returns:
        Whether the candidate is infra-blessed.
    """
    import math
    import uuid

    from ctloop.components.infra_validate import logic
    from ctloop.contract import serving_target
    from ctloop.local import task_exit

    task_exit.install()

    if not blessed:
        skipped = str(blessing.metadata.get("skipped")
                      or f"model not blessed: {blessing.metadata.get('reason') or 'no blessing'}")
        print(f"infra validation skipped: {skipped}")
        infra_blessing.metadata.update(infra_blessed=None, reason=f"skipped: {skipped}",
                                       skipped=skipped)
        for path, text in ((report.path, f"# Infra validation\n\nSkipped: {skipped}.\n"),
                           (server_log.path, "no server started\n")):
            with open(path, "w") as handle:
                handle.write(text)
        return False
    slo = logic.SLO(max_p99_ms=max_p99_ms, min_rps=min_rps, tolerance=tolerance,
                    concurrency=concurrency, requests=requests,
                    startup_timeout_s=startup_timeout_s)
    if serving_target(target) == "kserve":
        from ctloop import kserve

        config = kserve.ServiceConfig(
            name=model_name, namespace=kserve_namespace, mode=kserve_mode,
            service_account=kserve_service_account, image=serving_image or kserve.SERVING_IMAGE)
        api = kserve.connect()
        kserve.delete_stale_candidates(api, config)  # left by runs killed mid-validation
        token = uuid.uuid4().hex[:6]  # this run's own candidate: no other run's is touched
        serve = logic.kserve_candidate(api, config, model.uri, startup_timeout_s, token)
        with open(server_log.path, "w") as handle:  # the pods' logs are the cluster's
            handle.write(f"served by InferenceService {kserve_namespace}/"
                         f"{kserve.candidate_name(model_name, token)}; see its pods' logs\n")
    else:
        serve = logic.local_server(model.path, model_name, serving_python or "",
                                   startup_timeout_s, server_log.path)
    result = logic.run(model.path, eval_data.path, slo, serve)
    # KFP metadata is JSON: an infinite difference (a NaN answer) is said by the reason instead.
    finite = {k: v for k, v in result.metrics.items() if math.isfinite(v)}
    for name, value in finite.items():
        metrics.log_metric(name, value)
    infra_blessing.metadata.update(infra_blessed=result.blessed, reason=result.reason, **finite)
    with open(report.path, "w") as handle:
        handle.write(logic.report_markdown(result, model_name))
    return result.blessed
