"""What a monitor run writes: its Markdown report and its Prometheus metrics, each by rename."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ctloop import drift_report
from ctloop.monitor.measure import Result


def markdown(result: Result) -> str:
    """The monitor report: decision, window, prediction, latency, live metric and the table of
    every measurement (drift_report.markdown's columns)."""
    verdict = (f"**drift** in {', '.join(f'`{f}`' for f in result.features)}" if result.drifted
               else "no decision (too few rows)" if not result.enough else "no drift")
    lines = [
        f"# Monitor: {result.model_name} version {result.version}", "",
        f"Decision: {verdict}.", "",
        f"- window: {result.window}: {result.rows} rows served by version {result.version} "
        f"(previous window {result.previous_rows}; {result.other_versions_rows} rows of other "
        "versions in the record files read are left out)",
        f"- skew: the window vs span {result.span}'s training data (the serving version's); "
        "drift: the window vs the previous window",
        f"- prediction mean: {_fmt(result.prediction_mean)} (previous window "
        f"{_fmt(result.previous_prediction_mean)})",
    ]
    if result.latency_ms:
        lines.append(f"- latency per request: p50 {result.latency_ms['p50']:.2f} ms, p99 "
                     f"{result.latency_ms['p99']:.2f} ms (server side)")
    if result.live_metric:
        name, value, n = result.live_metric
        lines.append(f"- live {name}: {value:.4f} on {n} labeled rows")
    else:
        lines.append("- live metric: no labels came back for the window")
    lines += [f"- note: {n}" for n in result.notes]
    table = drift_report.markdown(result.measurements, None).split("\n")
    # drift_report.markdown's header speaks of spans and splits; keep its explanation and table.
    start = next((i for i, line in enumerate(table) if line.startswith(drift_report.HOW[:20])), 0)
    return "\n".join(lines + ["", "## Measurements", "", *table[start:]])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def prometheus(result: Result) -> str:
    """The result in Prometheus' text format (node_exporter's textfile collector reads it)."""
    model = _label(result.model_name)
    out = []

    def metric(name: str, what: str, samples: list[tuple[str, float]]) -> None:
        out.extend([f"# HELP {name} {what}", f"# TYPE {name} gauge"])
        out.extend(f"{name}{{{labels}}} {value:.6g}" for labels, value in samples)

    base = f'model="{model}",version="{result.version}"'
    metric("ctloop_monitor_distance", "Jensen-Shannon divergence of a feature (kind: skew vs "
           "training data, drift vs the previous window)",
           [(f'{base},feature="{_label(m.feature)}",kind="{m.kind}"', m.value)
            for m in result.measurements])
    metric("ctloop_monitor_breached", "1 when a feature's change is judged drift or skew",
           [(f'{base},feature="{_label(m.feature)}",kind="{m.kind}"',
             float(m.breached or m.too_new)) for m in result.measurements])
    metric("ctloop_monitor_drift", "1 when the monitor decided drift", [(base, result.drifted)])
    metric("ctloop_monitor_window_rows", "Rows in the window", [(base, result.rows)])
    if result.prediction_mean is not None:
        metric("ctloop_monitor_prediction_mean", "Mean prediction in the window",
               [(base, result.prediction_mean)])
    for quantile, value in result.latency_ms.items():
        metric(f"ctloop_monitor_latency_{quantile}_ms", f"Server-side request latency, {quantile}",
               [(base, value)])
    if result.live_metric:
        name, value, n = result.live_metric
        metric("ctloop_monitor_live_metric", "The task's metric on labeled rows of the window",
               [(f'{base},metric="{name}"', value)])
        metric("ctloop_monitor_labeled_rows", "Labeled rows in the window", [(base, n)])
    metric("ctloop_monitor_timestamp_seconds", "When the monitor ran", [(base, time.time())])
    return "\n".join(out) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Writes a file by rename, so a reader (the textfile collector) never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
