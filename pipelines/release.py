"""The CT pipeline's release: where a blessed model goes.

    infra_validate -> [infra-blessed] rollout (push, then deploy into ``release_stage`` with
                                               ``release_strategy``)

A run deploys into one stage of the registry: staging by default, from where only an approval
(``ctloop promote``, or a run of the ``ctloop-promote`` pipeline) moves a version to production;
``release_stage: production`` deploys straight there, for teams whose settings say so.
"""

from __future__ import annotations

from typing import Any, Callable

from ctloop.components.infra_validate.component import infra_validate
from ctloop.components.rollout.component import rollout
from ctloop.settings import SLO, CanarySLO, KServe, Release

# The components of the release, in the order they run (compiled one by one too).
RELEASE = (infra_validate, rollout)


def release_step(params: dict, gate: Callable, report: Callable, judged: dict, trained: Any,
                 evaluated: Any, validated: Any, ingested: Any, baseline: Any) -> Any:
    """Adds infra validation, and behind its gate rollout, with their run reports (blocked after
    infra validation, and after rollout); returns the rollout task.

    ``params``: the pipeline's parameters by name; ``gate(passed, name)``: the pipeline's gate;
    ``report(stopped, **artifacts)``: adds a run report; ``judged``: the evaluation's artifacts
    for the reports; the others: the tasks whose outputs the release reads.
    """
    p = params
    # After evaluation (its blessing is an input), not beside it: the server under test should
    # not share the cores with TFMA, or the latency it measures is the contention's.
    infra_validated = infra_validate(
        model=trained.outputs["model"], eval_data=ingested.outputs["eval_data"],
        blessing=evaluated.outputs["blessing"], blessed=evaluated.outputs["Output"],
        model_name=p["model_name"], target=p["serving_target"],
        serving_python=p["serving_python"], kserve_namespace=p["kserve_namespace"],
        kserve_mode=p["kserve_mode"], kserve_service_account=p["kserve_service_account"],
        serving_image=p["serving_image"], max_p99_ms=p["max_p99_ms"], min_rps=p["min_rps"],
        tolerance=SLO.tolerance, concurrency=SLO.concurrency, requests=SLO.requests,
        startup_timeout_s=p["infra_startup_timeout_s"],
    ).set_caching_options(False)
    served = dict(infra_blessing=infra_validated.outputs["infra_blessing"],
                  infra_report=infra_validated.outputs["report"])
    with gate(infra_validated.outputs["Output"], "infra-blessed"):
        rolled_out = rollout(
            model=trained.outputs["model"], schema=validated.outputs["schema"],
            statistics=validated.outputs["statistics"],
            train_data=ingested.outputs["train_data"],
            anomalies=validated.outputs["anomalies"], baseline=baseline.outputs["model"],
            blessing=evaluated.outputs["blessing"],
            infra_blessing=infra_validated.outputs["infra_blessing"],
            data_valid=validated.outputs["Output"], registry_uri=p["registry_uri"],
            model_name=p["model_name"], eval_data=ingested.outputs["eval_data"],
            target=p["serving_target"], serving_url=p["serving_url"],
            kserve_namespace=p["kserve_namespace"], kserve_mode=p["kserve_mode"],
            kserve_service_account=p["kserve_service_account"],
            serving_image=p["serving_image"], serving_record_uri=p["serving_record_uri"],
            canary_percent=p["canary_percent"], canary_requests=CanarySLO.requests,
            canary_max_error_rate=CanarySLO.max_error_rate, canary_max_p99_ms=p["max_p99_ms"],
            ready_timeout_s=KServe.ready_timeout_s, s3_endpoint_url=p["s3_endpoint_url"],
            stage=p["release_stage"], strategy=p["release_strategy"],
            shadow_requests=Release.shadow_requests,
            shadow_min_agreement=p["shadow_min_agreement"],
            shadow_max_error_rate=Release.max_shadow_error_rate,
            shadow_max_p99_ms=p["max_p99_ms"], green_requests=Release.green_requests,
            green_max_p99_ms=p["max_p99_ms"],
        ).set_caching_options(False)
        report(**judged, **served, pushed_model=rolled_out.outputs["pushed_model"],
               rollout_report=rolled_out.outputs["report"])
    report("not-infra-blessed", **judged, **served)
    return rolled_out
