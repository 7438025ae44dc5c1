"""Rollout: push a validated, blessed model into the registry, then put it into service.

The gate lives here too, not only in the pipeline graph (whose ``dsl.If`` runs rollout only
after the gates passed, on a cluster): kfp.local cannot run ``dsl.If``, and a push that checks
its own preconditions cannot be wired around by mistake (TFX's Pusher does the same).

The only writer of the registry: the pushed version, and with it the span's train statistics
(the drift reference of the spans after it). Nothing is read from it before the push: the
serving version the model was judged against is the run's baseline (``baseline_version``), and
the push checks, under the registry's lock, that it still serves.

After the push (an unserved version), a *deploy* puts it into service on a target and says
whether it was promoted; the registry's serving pointer names the new version only then:

- no deploy: nothing serves to canary against; the pointer moves at once, in the push itself
  (under its lock), so a run judged against the same serving version that pushes next finds
  its baseline stale instead of pushing a second version.
- ``local_canary``: a running ``ctloop serve --registry --stage S`` takes a share of its
  requests from the new version, then promotes or rolls it back.
- ``local_shadow``: the new version sees a copy of the stage's served requests, answers no
  client, and is promoted only if its answers agree with the served ones (and it is fast and
  does not fail).
- ``local_blue_green``: the new version is loaded beside the serving one with no traffic,
  checked at its own version's route, then the stage's pointer moves at once; the server keeps
  the old version loaded for a rollback with no reload.
- ``kserve_rollout``: the version becomes an InferenceService (canary first when one serves),
  and the pointer moves when KServe serves it to all traffic.

Each deploys into one stage (``ctloop.registry.STAGES``): production (the run's baseline is what
production serves, and a deploy there starts over it) or staging, where a person approves the
version for production afterwards (``ctloop promote``). Evaluation never depends on staging: a
staging deploy starts over whatever staging serves when it starts, read then and checked again
under the registry's lock by the pointer operation (a compare-and-set). Every deploy's outcome
is recorded in the version's record (``decisions``), with its numbers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ctloop.components.rollout.deploys import (
    PROMOTED_DIRECTLY,
    Deploy,
    Deployment,
    decided,
    first_in_stage,
    local_blue_green,
    local_canary,
    local_shadow,
    promote_command,
    rollback_command,
    start_over,
)
from ctloop.errors import CtloopError, StaleBaselineError
from ctloop.registry import PRODUCTION, STAGING, Registry, open_registry, stale_baseline
from ctloop.serving import canary

__all__ = ["PROMOTED_DIRECTLY", "Deploy", "Deployment", "RolloutResult", "decided",
           "first_in_stage", "gate", "kserve_rollout", "local_blue_green", "local_canary",
           "local_shadow", "promote_command", "report_markdown", "rollback_command", "run",
           "start_over"]

if TYPE_CHECKING:
    from kubernetes.dynamic import DynamicClient

    from ctloop.kserve import ServiceConfig
    from ctloop.registry.s3 import S3Registry


@dataclasses.dataclass(frozen=True)
class RolloutResult:
    """``pushed``: a new version was written; ``promoted``: it serves now."""

    pushed: bool
    reason: str
    version: int | None = None
    previous_version: int | None = None
    promoted: bool = False
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def gate(data_valid: bool | None, anomaly_count: int, blessed: bool | None, blessing_reason: str,
         infra_blessed: bool | None, infra_reason: str) -> str | None:
    """The reason not to push, or None when the model may be pushed.

    Unknown state (a missing verdict) blocks, like a failed one: the serving model keeps serving.
    """
    if data_valid is not True:
        return (f"data validation did not pass ({anomaly_count} blocking anomalies); see the "
                "anomalies report")
    if blessed is not True:
        return f"model not blessed: {blessing_reason or 'no blessing recorded'}"
    if infra_blessed is not True:
        return f"model not infra-blessed: {infra_reason or 'no infra blessing recorded'}"
    return None


def kserve_rollout(api: DynamicClient, config: ServiceConfig, artifact_uri: str,
                   rows: list[dict[str, Any]], slo: canary.CanarySLO,
                   ready_timeout_s: float = 600.0,
                   url_for: Callable[[dict[str, Any], bool], str | None] | None = None,
                   stage: str = PRODUCTION) -> Deploy:
    """The version as ``config``'s InferenceService, from ``artifact_uri`` (the model artifact).

    ``kserve.rollout`` canaries it when a version serves, promotes or rolls back; the registry's
    pointer moves to the version only when KServe serves it to all traffic, and only over the
    version it was judged against. ``url_for``: where to probe (default: the in-cluster
    addresses, ``kserve.probe_url``). ``stage``: the stage whose pointer moves; on a cluster
    each stage is its own InferenceService (``config.name``: the component names staging's
    ``<model>-staging``).
    """
    from ctloop import kserve

    url_for = url_for or kserve.probe_url

    kserve.storage_uri(artifact_uri)  # an unservable URI fails now, before anything is pushed

    def deploy(registry: Registry | S3Registry, number: int, baseline: int | None) -> Deployment:
        # Before KServe takes the version: another run's version may serve since this one was
        # evaluated. (A run promoting during this rollout is not excluded: on a cluster the
        # InferenceService, not a registry lock, is what serves.)
        over = start_over(registry, stage, baseline)
        current = registry.serving(stage=stage)
        stale = stale_baseline(registry.uri, current.number if current else None, over)
        if stale:
            return decided(False, f"not deployed: {stale}", {"target": "kserve"}, stage,
                           "canary")
        outcome = kserve.rollout(api, config, number, artifact_uri, rows, slo,
                                 ready_timeout_s=ready_timeout_s, url_for=url_for)
        if outcome["promoted"]:
            # Only over the version this one was judged against, checked under the registry's
            # lock: another run promoted since would otherwise lose its pointer to this one.
            try:
                registry.set_serving(number, expected_serving=over, stage=stage)
            except StaleBaselineError as exc:
                outcome.update(promoted=False, action="not_recorded",
                               reason=f"{outcome['reason']}; but the registry's pointer was not "
                                      f"moved: {exc}")
        where = f"InferenceService {config.namespace}/{config.name}"
        if outcome["strategy"] == "canary" and outcome.get("traffic"):
            what = (f"canary ({slo.percent}% asked; {outcome['traffic']}) "
                    f"{outcome['action'].replace('_', ' ')} on {where}")
        elif outcome["strategy"] == "canary":
            what = f"{slo.percent}% canary {outcome['action'].replace('_', ' ')} on {where}"
        else:
            what = f"{outcome['action'].replace('_', ' ')} on {where}"
        probe = outcome.get("probe") or {}
        numbers = {k: probe.get(k) for k in ("answered", "errors", "p50_ms", "p99_ms")
                   if k in probe}
        return Deployment(outcome["promoted"], f"{what}: {outcome['reason']}",
                          {"target": "kserve", **outcome, "stage": stage},
                          {"stage": stage, "strategy": outcome["strategy"], "numbers": numbers})

    return deploy


def run(
    model_dir: str,
    schema_path: str,
    data_valid: bool | None,
    anomaly_count: int,
    blessed: bool | None,
    blessing_reason: str,
    infra_blessed: bool | None,
    infra_reason: str,
    baseline_version: int | None,
    registry_uri: str,
    model_name: str,
    record: dict[str, Any],
    deploy: Deploy | None = None,
    s3_endpoint_url: str | None = None,
    statistics: tuple[int, str] | None = None,
    stage: str = PRODUCTION,
) -> RolloutResult:
    """Pushes the model as a new, unserved version if the gate allows it, then deploys it.

    ``baseline_version`` is the serving version the model was evaluated against (the run's
    baseline, None on a cold start); if another run has moved the pointer since, the blessing no
    longer holds and nothing is pushed. ``deploy`` None: nothing serves to canary against, and
    the infra-validated model is promoted directly. ``statistics``: (span, train statistics
    file), stored once the version is pushed: the drift reference of the spans after it.
    ``registry_uri`` is a local folder or ``s3://`` (``s3_endpoint_url``: its endpoint).
    ``stage``: the stage the version is deployed into (``deploy`` was made for it too); the
    push itself is checked against production's baseline either way. The deploy's outcome is
    appended to the version's record (``decisions``).
    """
    previous = baseline_version
    reason = gate(data_valid, anomaly_count, blessed, blessing_reason, infra_blessed,
                  infra_reason)
    if reason:
        return RolloutResult(False, reason, None, previous)
    registry = open_registry(registry_uri, model_name, s3_endpoint_url)
    # Promoting directly, the pointer moves in the push, under the same lock as its baseline
    # check: pushed unserved and promoted after, a second run judged against the same baseline
    # could push between the two and find that baseline still serving.
    # Into staging, the push is still checked against production's baseline (what the blessing
    # holds against) and the staging pointer moves after, in its own lock.
    try:
        version = registry.push(model_dir, schema_path,
                                {**record, "previous_version": previous,
                                 "pushed_unix": round(time.time(), 3)},
                                expected_serving=baseline_version,
                                serve=deploy is None and stage == PRODUCTION)
    except StaleBaselineError as exc:
        return RolloutResult(False, str(exc), None, previous)
    if statistics is not None:
        registry.save_statistics(*statistics)
    if deploy is not None:
        deployment = deploy(registry, version.number, baseline_version)
    elif stage == PRODUCTION:
        deployment = dataclasses.replace(PROMOTED_DIRECTLY,
                                         decision={"stage": stage, "strategy": "direct"})
    else:  # no server to release on: staging serves it at once, over what it serves now
        over = start_over(registry, stage, baseline_version)
        try:
            registry.set_serving(version.number, expected_serving=over, stage=stage)
            deployment = decided(True, f"promoted into {stage} (no running server to release "
                                 "on)", {}, stage, "direct")
        except StaleBaselineError as exc:
            deployment = decided(False, f"not deployed: {exc}", {}, stage, "direct")
    reason = f"pushed as version {version.number}; {deployment.reason}"
    if stage == STAGING:
        reason = f"pushed as version {version.number}; staging: {deployment.reason}"
        if deployment.promoted:
            reason += "; awaiting approval to production (ctloop promote)"
    decision = {"action": "deploy", "stage": stage, "strategy": "direct",
                **deployment.decision, "promoted": deployment.promoted,
                "reason": deployment.reason, "unix": round(time.time(), 3)}
    try:
        registry.record_decision(version.number, decision)
    except CtloopError as exc:  # the pointer moved (or not) already: say the record lacks it
        reason += f" (the decision was not recorded in the version's record: {exc})"
    details = {**deployment.details, "stage": stage, "decision": decision}
    if deployment.promoted and stage == STAGING:
        details["approve"] = promote_command(model_name, version.number, registry_uri)
    return RolloutResult(True, reason, version.number, previous, deployment.promoted, details)


def report_markdown(result: RolloutResult, model_name: str) -> str:
    """The rollout's decision for the KFP UI: gate, push, deploy, and the target's evidence."""
    if not result.pushed:
        verdict = "NOT PUSHED"
    else:
        verdict = "PROMOTED" if result.promoted else "PUSHED, NOT SERVING"
    serving = result.version if result.promoted else result.previous_version
    lines = [f"# Rollout: {model_name}", "", f"**{verdict}**: {result.reason}", "",
             "| | |", "|---|---|",
             f"| new version | {result.version if result.version is not None else '-'} |",
             f"| serving before | {_or_none(result.previous_version)} |",
             f"| serving now | {_or_none(serving)} |"]
    details = result.details
    if details.get("target") == "kserve":
        lines.append(f"| InferenceService | {details['namespace']}/{details['name']} "
                     f"({details['mode']} mode, {details['strategy']}) |")
        if details.get("traffic"):
            lines.append(f"| canary traffic | {details['traffic']} |")
        probe = details.get("probe") or {}
        if probe:
            p99 = "-" if probe.get("p99_ms") is None else f"{probe['p99_ms']} ms"
            lines.append(f"| probe | {probe['answered']} answered, {probe['errors']} errors, "
                         f"p99 {p99} at {probe['url']} |")
        lines += ["", "## Readiness", "", "| phase | after | state | reason |", "|---|---|---|---|"]
        lines += [f"| {phase} | {step['elapsed_s']} s | {step['state']} | {step['reason'] or '-'} |"
                  for phase, steps in details.get("readiness", {}).items() for step in steps]
    elif details.get("target") == "local":
        lines.append(f"| {details.get('strategy', 'canary').replace('_', '-')} on | "
                     f"{details['serving_url']} |")
    decision = details.get("decision") or {}
    if decision:
        lines += ["", "## Decision", "", "| | |", "|---|---|",
                  f"| stage | {decision['stage']} |",
                  f"| strategy | {decision['strategy'].replace('_', '-')} |",
                  f"| promoted | {'yes' if decision['promoted'] else 'no'} |"]
        lines += [f"| {name.replace('_', ' ')} | {_number(value)} |"
                  for name, value in (decision.get("numbers") or {}).items()]
    if details.get("rollback"):
        lines += ["", f"The previous version is kept loaded for {details['warm_s']:g} s: a "
                  "rollback within that time is served at once, with no reload:", "",
                  f"    {details['rollback']}"]
    if result.promoted and details.get("approve"):
        lines += ["", f"**Awaiting approval**: version {result.version} serves in staging. To "
                  "serve it in production, a person approves it with:", "",
                  f"    {details['approve']}"]
    return "\n".join(lines) + "\n"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _or_none(version: int | None) -> str:
    return "none" if version is None else f"version {version}"
