"""monitor: one monitor pass on a cluster — the latest window of served records (a folder or
``s3://``) against the serving version's training data and the previous window, the report, the
metrics for the KFP UI, and whether this pass opens a drift episode that starts a CT run.

No kfp import: called in-process by tests and by the KFP wrapper. The measures, the report and
the episode rules are the core's (``ctloop.monitor``), the same ``ctloop monitor`` runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ctloop import drift
from ctloop.monitor import measure, records, report, store, trigger

STATE_NAME = ("monitor", "trigger-state.json")


@dataclasses.dataclass(frozen=True)
class MonitorPass:
    result: measure.Result
    decision: dict[str, Any]
    markdown: str
    metrics: dict[str, float]
    state_uri: str

    @property
    def start_run(self) -> bool:
        return bool(self.decision.get("trigger", {}).get("started"))


def state_uri_for(records_uri: str, state_uri: str | None) -> str:
    """The trigger's state: ``state_uri``, else ``RECORDS/monitor/trigger-state.json`` (one
    per record location, as ``ctloop monitor`` keeps it)."""
    return state_uri or store.join(records_uri, *STATE_NAME)


def run(records_uri: str, registry_uri: str, model_name: str, window: str, min_rows: int,
        thresholds: drift.Thresholds, trigger_pipeline: str | None, cooldown_minutes: float,
        state_uri: str | None = None, s3_endpoint_url: str | None = None) -> MonitorPass:
    """Measures one window; with ``trigger_pipeline``, claims the run of a new drift episode
    (the state is written before the run is submitted, so a retried or concurrent pass does
    not start a second run for the episode)."""
    result = measure.monitor(records_uri, registry_uri, model_name, records.Window.parse(window),
                             thresholds, min_rows, s3_endpoint_url)
    decision = result.decision()
    state = state_uri_for(records_uri, state_uri)
    if trigger_pipeline:
        claimed = trigger.claim(result, state, ["kfp-run", trigger_pipeline],
                                cooldown_minutes * 60, s3_endpoint_url=s3_endpoint_url)
        decision["trigger"] = claimed.as_dict()
    return MonitorPass(result, decision, report.markdown(result), ui_metrics(result), state)


def ui_metrics(result: measure.Result) -> dict[str, float]:
    """Scalars for KFP's metrics view: ``drift`` (0/1), ``rows``, ``<kind>_<feature>`` (the
    Jensen-Shannon divergence of each measurement), ``prediction_mean``, ``live_<metric>``."""
    found = {"drift": float(result.drifted), "rows": float(result.rows)}
    for m in result.measurements:
        found[f"{m.kind}_{m.feature}"] = float(m.value)
    if result.prediction_mean is not None:
        found["prediction_mean"] = float(result.prediction_mean)
    if result.live_metric:
        name, value, n = result.live_metric
        found[f"live_{name}"] = float(value)
        found["labeled_rows"] = float(n)
    return found
