"""KFP component: push a validated, blessed model into the local model registry."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from ctloop.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def rollout(
    model: Input[Model],
    schema: Input[Artifact],
    train_data: Input[Dataset],
    anomalies: Input[Artifact],
    blessing: Input[Artifact],
    infra_blessing: Input[Artifact],
    data_valid: bool,
    registry_uri: str,
    model_name: str,
    eval_data: Input[Dataset],
    pushed_model: Output[Artifact],
    serving_url: Optional[str] = None,
    canary_percent: int = 20,
    canary_requests: int = 200,
    canary_max_error_rate: float = 0.0,
    canary_max_p99_ms: float = 250.0,
) -> bool:
    """Pushes the model as the registry's new serving version if the data is valid and the model
    is blessed (evaluation) and infra-blessed (it served within the SLO).

    Otherwise nothing moves: the serving version keeps serving and the reason is recorded.

    Args:
        model: The trained SavedModel.
        schema: The schema the data was validated with; stored with the version.
        train_data: The train split; its span and fingerprint go into the run record.
        anomalies: validate_data's anomalies (metadata ``blocking_count``).
        blessing: evaluate's blessing (metadata ``blessed``, ``reason``, ``metrics`` and
            ``baseline_version``, the serving version it was judged against).
        infra_blessing: infra_validate's verdict (metadata ``infra_blessed`` and ``reason``).
        data_valid: validate_data's verdict.
        registry_uri: The model registry root.
        model_name: The model's name in the registry.
        eval_data: The eval split: its rows are the canary's requests.
        pushed_model: Output: metadata ``pushed``, ``promoted``, ``version``, ``reason``,
            ``previous_version``.
        serving_url: A running server that follows this registry (``ctloop serve --registry``):
            the new version takes ``canary_percent`` % of its requests first, and is promoted or
            rolled back on the canary's errors and latency. None or empty: promote directly.
        canary_percent: The canary's share of requests.
        canary_requests: Requests sent during the canary.
        canary_max_error_rate: Largest share of failed requests allowed during the canary.
        canary_max_p99_ms: Largest p99 latency of the canary's answers.

    Returns:
        Whether the new version serves now.
    """
    import json
    import os

    from ctloop.components.rollout import canary, logic
    from ctloop.components.rollout.canary import rows as canary_rows

    def _version(value):  # KFP metadata is a protobuf Struct: numbers come back as floats
        return None if value is None else int(value)

    record = {
        "span": train_data.metadata.get("span"),
        "data_fingerprint": train_data.metadata.get("fingerprint"),
        "metrics": blessing.metadata.get("metrics", {}),
        "baseline_version": blessing.metadata.get("baseline_version"),
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
        baseline_version=_version(blessing.metadata.get("baseline_version")),
        registry_uri=registry_uri,
        model_name=model_name,
        record=record,
        serving_url=serving_url or None,
        canary_rows=canary_rows(eval_data.path, model.path) if serving_url else None,
        canary_slo=canary.CanarySLO(
            percent=canary_percent, requests=canary_requests,
            max_error_rate=canary_max_error_rate, max_p99_ms=canary_max_p99_ms),
    )
    outcome = {
        "pushed": result.pushed, "promoted": result.promoted, "version": result.version,
        "reason": result.reason, "previous_version": result.previous_version,
    }
    pushed_model.metadata.update(outcome)
    with open(pushed_model.path, "w") as handle:
        json.dump(outcome, handle, indent=2)
    return result.promoted
