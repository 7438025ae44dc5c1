"""Rollout (local target): push a validated, blessed model into the registry, or record why not.

The gate lives here, not in the pipeline graph: kfp.local cannot run ``dsl.If``, and a push that
checks its own preconditions cannot be wired around by mistake (TFX's Pusher does the same).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ctloop.components.rollout import canary
from ctloop.errors import StaleBaselineError
from ctloop.registry import Registry


@dataclasses.dataclass(frozen=True)
class RolloutResult:
    """``pushed``: a new version was written; ``promoted``: it serves now."""

    pushed: bool
    reason: str
    version: int | None = None
    previous_version: int | None = None
    promoted: bool = False


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
    serving_url: str | None = None,
    canary_rows: list[dict[str, Any]] | None = None,
    canary_slo: canary.CanarySLO | None = None,
) -> RolloutResult:
    """Pushes the model as a new version if the gate allows it, then promotes it.

    ``baseline_version`` is the serving version the model was evaluated against; if another run
    has moved the pointer since, the blessing no longer holds and nothing is pushed.

    With ``serving_url`` (a running server following this registry), the new version first
    takes ``canary_slo.percent`` % of that server's requests while ``canary_rows`` are sent to it;
    it is promoted only if the canary meets the SLO, else rolled back (the version stays in the
    registry, unserved). Without one, nothing serves to canary against: the infra-validated
    version is promoted directly.
    """
    registry = Registry(registry_uri, model_name)
    current = registry.serving()
    previous = current.number if current else None
    reason = gate(data_valid, anomaly_count, blessed, blessing_reason, infra_blessed,
                  infra_reason)
    if reason:
        return RolloutResult(False, reason, None, previous)
    try:
        version = registry.push(model_dir, schema_path, {**record, "previous_version": previous},
                                expected_serving=baseline_version, serve=False)
    except StaleBaselineError as exc:
        return RolloutResult(False, str(exc), None, previous)
    if not serving_url:
        registry.set_serving(version.number)
        return RolloutResult(True, f"pushed as version {version.number} and promoted (no running "
                             "server to canary against)", version.number, previous, True)
    slo = canary_slo or canary.CanarySLO()
    promote = False
    registry.start_canary(version.number, slo.percent)
    try:
        stats = canary.probe(serving_url, model_name, canary_rows or [], str(version.number), slo)
        promote, why = canary.verdict(stats, str(version.number), slo)
    finally:
        # Whatever happened (the probe may raise), the canary ends; it is promoted only on a
        # passing verdict.
        registry.end_canary(promote=promote)
    action = "promoted" if promote else "rolled back"
    return RolloutResult(True, f"pushed as version {version.number}; {slo.percent}% canary "
                         f"{action}: {why}", version.number, previous, promote)
