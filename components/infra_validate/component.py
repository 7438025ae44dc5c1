"""KFP component: serve the candidate in the real serving runtime; check answers and speed."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from ctloop.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def infra_validate(
    model: Input[Model],
    eval_data: Input[Dataset],
    model_name: str,
    serving_python: str,
    infra_blessing: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    server_log: Output[Artifact],
    max_p99_ms: float = 250.0,
    min_rps: float = 20.0,
    tolerance: float = 1e-4,
    concurrency: int = 4,
    requests: int = 200,
    startup_timeout_s: float = 180.0,
) -> bool:
    """Starts the candidate in the KServe model server and tests it like a deployment would.

    Locally the server is a process of the serving environment (``serving_python``). Fail-safe:
    a server that does not start, errs, disagrees with the model or misses the SLO is not
    infra-blessed, and rollout then pushes nothing.

    Args:
        model: The candidate SavedModel.
        eval_data: The eval split: its rows are the requests.
        model_name: The model's name in request paths.
        serving_python: The python of the serving environment (kserve installed).
        infra_blessing: Output: metadata ``infra_blessed``, ``reason`` and the measurements.
        metrics: Output: startup_s, max_abs_diff, p50_ms, p99_ms, rps.
        report: Output: every check, measured vs required.
        server_log: Output: the model server's log.
        max_p99_ms: SLO: p99 latency of single-row requests under ``concurrency`` clients.
        min_rps: SLO: requests per second under ``concurrency`` clients.
        tolerance: Largest difference between served and in-process predictions.
        concurrency: Clients sending at once during the load test.
        requests: Single-row requests in the load test.
        startup_timeout_s: Deadline for the server to become ready.

    Returns:
        Whether the candidate is infra-blessed.
    """
    import math

    from ctloop.components.infra_validate import logic

    slo = logic.SLO(max_p99_ms=max_p99_ms, min_rps=min_rps, tolerance=tolerance,
                    concurrency=concurrency, requests=requests,
                    startup_timeout_s=startup_timeout_s)
    result = logic.run(model.path, eval_data.path, model_name, serving_python, slo,
                       server_log=server_log.path)
    # KFP metadata is JSON: an infinite difference (a NaN answer) is said by the reason instead.
    finite = {k: v for k, v in result.metrics.items() if math.isfinite(v)}
    for name, value in finite.items():
        metrics.log_metric(name, value)
    infra_blessing.metadata.update(infra_blessed=result.blessed, reason=result.reason, **finite)
    with open(report.path, "w") as handle:
        handle.write(logic.report_markdown(result, model_name))
    return result.blessed
