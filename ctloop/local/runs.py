"""What a workdir and a registry hold, as rows of a table: ``ctloop runs`` and ``ctloop versions``.

A local run's record is its folder under ``WORKDIR/pipeline_root/``: each task leaves its
``executor_output.json`` there (see ``local_run``), and a failed task its one-line reason
(``task_exit.FAILURE_FILE``). A run that failed has no outputs from the failed task on: its row
says which task failed and why.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

from ctloop.errors import ConfigError
from ctloop.local import task_exit

# kfp.local names a run's folder <pipeline name>-<YYYY-MM-DD-HH-MM-SS-micro> (local time).
_STAMP = re.compile(r"-(\d{4})-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-\d+$")


def task_outputs(run_dir: Path, task: str) -> dict[str, Any] | None:
    """A task's executor outputs in a run's folder; None when it wrote none."""
    path = run_dir / task / "executor_output.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def artifact_metadata(outputs: dict[str, Any] | None, artifact: str) -> dict[str, Any]:
    """The metadata of a task's output artifact ({} when absent)."""
    try:
        return outputs["artifacts"][artifact]["artifacts"][0]["metadata"]
    except (TypeError, KeyError, IndexError):
        return {}


def _yes_no(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def run_row(run_dir: Path) -> dict[str, str]:
    """One run's row: time, span(s), the baseline it was judged against, the decisions, the
    pushed version, and the outcome."""
    from ctloop.local.runner import REPORT_TASK, TASKS

    # The pipeline's own page is no decision; runs from before it (or the tune task) existed have
    # no folder for it.
    tasks = [t for t in TASKS if t not in (REPORT_TASK, "tune") or (run_dir / t).is_dir()]
    found = _STAMP.search(run_dir.name)
    when = "{}-{}-{} {}:{}:{}".format(*found.groups()) if found else "-"
    outputs = {task: task_outputs(run_dir, task) for task in TASKS}
    select = (outputs["select-span"] or {}).get("parameterValues", {})
    spans = [int(s) for s in select.get("spans_read") or []]
    baseline = artifact_metadata(outputs.get("load-baseline"), "model")
    data_valid = (outputs["validate-data"] or {}).get("parameterValues", {}).get("Output")
    blessing = artifact_metadata(outputs["evaluate"], "blessing")
    infra = artifact_metadata(outputs["infra-validate"], "infra_blessing")
    pushed = artifact_metadata(outputs["rollout"], "pushed_model")
    # The task that says it failed; else the first without outputs (still running, or stopped).
    failed = next((task for task in tasks if outputs[task] is None
                   and (run_dir / task / task_exit.FAILURE_FILE).is_file()), None) or next(
        (task for task in tasks if outputs[task] is None), None)
    if failed is not None:
        reason_file = run_dir / failed / task_exit.FAILURE_FILE
        outcome = f"{failed} failed: {reason_file.read_text().strip()}" if (
            reason_file.is_file()) else f"{failed}: no outputs (still running, or stopped)"
    else:
        outcome = pushed.get("reason", "-")
    return {
        "time": when,
        "span": ",".join(map(str, spans)) or "-",
        "baseline": _baseline(baseline),
        "data valid": _yes_no(data_valid),
        "blessed": _yes_no(blessing.get("blessed")),
        "infra": _yes_no(infra.get("infra_blessed")),
        "pushed": f"v{pushed['version']}" if pushed.get("pushed") else "-",
        "outcome": outcome,
    }


def _baseline(metadata: dict[str, Any]) -> str:
    """The version a run was judged against: vN, "none" on a cold start, "-" when unknown (the
    run ended before, or it predates the resolver)."""
    if "version" not in metadata:
        return "-"
    return "none" if metadata["version"] is None else f"v{int(metadata['version'])}"


def list_runs(workdir: str | Path) -> list[dict[str, str]]:
    """The rows of every run under ``workdir/pipeline_root``, oldest first.

    Raises:
        ConfigError: ``workdir`` has no pipeline_root (no run ever started there).
    """
    root = Path(workdir) / "pipeline_root"
    if not root.is_dir():
        raise ConfigError(f"{workdir} holds no runs (no {root}); pass the --workdir of "
                          "`ctloop run`")
    # One pipeline's folders differ only in their time stamp: by name is by time.
    return [run_row(p) for p in sorted(p for p in root.iterdir() if p.is_dir())]


def version_rows(registry: Any) -> list[dict[str, str]]:
    """One row per version of a registry (``registry.open_registry``): its span, the judged
    metrics its record holds, its infra figures, and whether it serves or is a canary."""
    serving = registry.serving()
    canary = registry.canary() if hasattr(registry, "canary") else None
    rows = []
    for version in registry.versions():
        record = version.record()
        metrics = record.get("metrics", {})
        shown = {k: v for k, v in metrics.items() if k in (
            "auc", "accuracy", "binary_accuracy", "mae", "rmse")}
        infra = record.get("infra", {})
        state = ""
        if serving is not None and version.number == serving.number:
            state = "serving"
        elif canary is not None and version.number == canary[0].number:
            state = f"canary {canary[1]}%"
        when = datetime.datetime.fromtimestamp(record["pushed_unix"]).strftime(
            "%Y-%m-%d %H:%M:%S") if "pushed_unix" in record else "-"
        rows.append({
            "version": f"v{version.number}",
            "state": state or "-",
            "pushed": when,
            "span": ",".join(str(int(s)) for s in record.get("spans") or []) or "-",
            "metrics": ", ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())) or "-",
            "p99 ms": f"{infra['p99_ms']:.1f}" if "p99_ms" in infra else "-",
            "baseline": f"v{record['baseline_version']}" if record.get(
                "baseline_version") else "-",
        })
    return rows


def table(rows: list[dict[str, str]], width: int | None = None) -> str:
    """Rows as aligned columns under a header; the last column is cut at ``width``."""
    if not rows:
        return ""
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
    lines = []
    for row in [dict(zip(columns, [c.upper() for c in columns], strict=True)), *rows]:
        line = "  ".join(row[c].ljust(widths[c]) for c in columns[:-1]) + "  " + row[columns[-1]]
        if width and len(line) > width:
            line = line[:width - 1] + "…"
        lines.append(line.rstrip())
    return "\n".join(lines)
