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
- ``local_canary``: a running ``ctloop serve --registry`` takes a share of its requests from
  the new version, then promotes or rolls it back.
- ``kserve_rollout``: the version becomes an InferenceService (canary first when one serves),
  and the pointer moves when KServe serves it to all traffic.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ctloop.errors import StaleBaselineError
from ctloop.registry import Registry, open_registry, stale_baseline
from ctloop.serving import canary

if TYPE_CHECKING:
    from kubernetes.dynamic import DynamicClient

    from ctloop.kserve import ServiceConfig
    from ctloop.registry.s3 import S3Registry


@dataclasses.dataclass(frozen=True)
class Deployment:
    """What a deploy did: ``promoted`` (the version serves now), why, and target details."""

    promoted: bool
    reason: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


# No deploy: nothing serves to canary against.
PROMOTED_DIRECTLY = Deployment(True, "promoted (no running server to canary against)")

# (registry, new version number, the serving version it was evaluated against) -> what
# happened. A deploy moves the serving pointer itself, only when the version serves all traffic
# and only over the version it was evaluated against.
Deploy = Callable[["Registry | S3Registry", int, "int | None"], Deployment]


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


def local_canary(serving_url: str, rows: list[dict[str, Any]], slo: canary.CanarySLO) -> Deploy:
    """A canary on a running local server that follows the registry.

    The version takes ``slo.percent`` % of the server's requests while ``rows`` are sent; it is
    promoted only if the canary meets the SLO, else rolled back (it stays in the registry,
    unserved). Another run's version that came to serve since this one was evaluated (its
    canary ended first) means no canary, or a rolled back one: the evaluation no longer holds.
    """

    def deploy(registry: Registry, number: int, baseline: int | None) -> Deployment:
        details = {"target": "local", "serving_url": serving_url}
        promote = False
        try:
            registry.start_canary(number, slo.percent, expected_serving=baseline)
        except StaleBaselineError as exc:
            return Deployment(False, f"no canary: {exc}", details)
        try:
            stats = canary.probe(serving_url, registry.model_name, rows, str(number), slo)
            promote, why = canary.verdict(stats, str(number), slo)
        finally:
            # Whatever happened (the probe may raise), the canary ends; it is promoted only on
            # a passing verdict, and only over the version it started over.
            try:
                registry.end_canary(promote=promote, number=number)
            except StaleBaselineError as exc:
                promote, why = False, str(exc)
        action = "promoted" if promote else "rolled back"
        return Deployment(promote, f"{slo.percent}% canary {action}: {why}", details)

    return deploy


def kserve_rollout(api: DynamicClient, config: ServiceConfig, artifact_uri: str,
                   rows: list[dict[str, Any]], slo: canary.CanarySLO,
                   ready_timeout_s: float = 600.0,
                   url_for: Callable[[dict[str, Any], bool], str | None] | None = None) -> Deploy:
    """The version as ``config``'s InferenceService, from ``artifact_uri`` (the model artifact).

    ``kserve.rollout`` canaries it when a version serves, promotes or rolls back; the registry's
    pointer moves to the version only when KServe serves it to all traffic, and only over the
    version it was judged against. ``url_for``: where to probe (default: the in-cluster
    addresses, ``kserve.probe_url``).
    """
    from ctloop import kserve

    url_for = url_for or kserve.probe_url

    kserve.storage_uri(artifact_uri)  # an unservable URI fails now, before anything is pushed

    def deploy(registry: Registry | S3Registry, number: int, baseline: int | None) -> Deployment:
        # Before KServe takes the version: another run's version may serve since this one was
        # evaluated. (A run promoting during this rollout is not excluded: on a cluster the
        # InferenceService, not a registry lock, is what serves.)
        current = registry.serving()
        stale = stale_baseline(registry.uri, current.number if current else None, baseline)
        if stale:
            return Deployment(False, f"not deployed: {stale}", {"target": "kserve"})
        outcome = kserve.rollout(api, config, number, artifact_uri, rows, slo,
                                 ready_timeout_s=ready_timeout_s, url_for=url_for)
        if outcome["promoted"]:
            # Only over the version this one was judged against, checked under the registry's
            # lock: another run promoted since would otherwise lose its pointer to this one.
            try:
                registry.set_serving(number, expected_serving=baseline)
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
        return Deployment(outcome["promoted"], f"{what}: {outcome['reason']}",
                          {"target": "kserve", **outcome})

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
) -> RolloutResult:
    """Pushes the model as a new, unserved version if the gate allows it, then deploys it.

    ``baseline_version`` is the serving version the model was evaluated against (the run's
    baseline, None on a cold start); if another run has moved the pointer since, the blessing no
    longer holds and nothing is pushed. ``deploy`` None: nothing serves to canary against, and
    the infra-validated model is promoted directly. ``statistics``: (span, train statistics
    file), stored once the version is pushed: the drift reference of the spans after it.
    ``registry_uri`` is a local folder or ``s3://`` (``s3_endpoint_url``: its endpoint).
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
    try:
        version = registry.push(model_dir, schema_path,
                                {**record, "previous_version": previous,
                                 "pushed_unix": round(time.time(), 3)},
                                expected_serving=baseline_version, serve=deploy is None)
    except StaleBaselineError as exc:
        return RolloutResult(False, str(exc), None, previous)
    if statistics is not None:
        registry.save_statistics(*statistics)
    deployment = (PROMOTED_DIRECTLY if deploy is None
                  else deploy(registry, version.number, baseline_version))
    return RolloutResult(True, f"pushed as version {version.number}; {deployment.reason}",
                         version.number, previous, deployment.promoted, deployment.details)


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
        lines.append(f"| canary on | {details['serving_url']} |")
    return "\n".join(lines) + "\n"


def _or_none(version: int | None) -> str:
    return "none" if version is None else f"version {version}"
