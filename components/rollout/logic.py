"""Rollout (local target): push a validated, blessed model into the registry, or record why not.

The gate lives here, not in the pipeline graph: kfp.local cannot run ``dsl.If``, and a push that
checks its own preconditions cannot be wired around by mistake (TFX's Pusher does the same).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ctloop.errors import StaleBaselineError
from ctloop.registry import Registry


@dataclasses.dataclass(frozen=True)
class RolloutResult:
    pushed: bool
    reason: str
    version: int | None = None
    previous_version: int | None = None


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
) -> RolloutResult:
    """Pushes the model as a new serving version if the gate allows it.

    ``baseline_version`` is the serving version the model was evaluated against; if another run
    has moved the pointer since, the blessing no longer holds and nothing is pushed.
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
                                expected_serving=baseline_version)
    except StaleBaselineError as exc:
        return RolloutResult(False, str(exc), None, previous)
    return RolloutResult(True, f"pushed as version {version.number}", version.number, previous)
