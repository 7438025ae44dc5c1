"""Hand-built artifacts of a run's tasks, as KFP hands them to run_report: a pushed run, and a run
that data validation blocked (compiled for a cluster, no task after the gate ran)."""

from __future__ import annotations

from pathlib import Path

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics

WHY = "1 blocking anomaly: plan (Drift)"


def _artifact(kind, path: Path, metadata: dict | None = None, text: str | None = None):
    found = kind(uri=str(path))
    found.metadata.update(metadata or {})
    if text is not None:
        path.write_text(text)
    return found


def blocked_run(folder: Path) -> dict:
    """run_report's inputs when data validation blocked span 3 (judged against version 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "spans_read": [3],
        "baseline_schema": _artifact(Artifact, folder / "baseline_schema", {"version": 1.0}),
        "train_data": _artifact(Dataset, folder / "train", {"rows": 3987.0}),
        "eval_data": _artifact(Dataset, folder / "eval", {"rows": 1013.0}),
        "data_valid": False,
        "anomalies": _artifact(Artifact, folder / "anomalies", {
            "anomaly_count": 1.0, "blocking_count": 1.0, "valid": False, "summary": WHY}),
        "schema": _artifact(Artifact, folder / "schema", {"source": "serving model: version 1"}),
        "drift_metrics": _artifact(Metrics, folder / "drift", {
            "drift.age": 0.0012, "drift.plan <b>": 0.41, "skew.age": 0.003}),
        "anomalies_report": _artifact(Markdown, folder / "anomalies.md", text=(
            "# Data validation: span 3\n\n| plan | Drift | block |\n")),
    }


def pushed_run(folder: Path) -> dict:
    """run_report's inputs when span 2 was blessed against version 1 and pushed as version 2."""
    found = blocked_run(folder)
    found.update(spans_read=[2], data_valid=True)
    found["anomalies"].metadata.update(blocking_count=0.0, valid=True,
                                       summary="no blocking anomaly")
    found["drift_metrics"].metadata["drift.plan <b>"] = 0.041
    found.update(
        blessing=_artifact(Artifact, folder / "blessing", {
            "blessed": True, "reason": "passed", "baseline_version": 1,
            "metrics": {"auc": 0.8194}, "baseline_metrics": {"auc": 0.8216},
            "checks": [{"metric": "auc change vs serving model", "value": -0.0022,
                        "threshold": "AUC >= serving model's AUC - 0.01", "passed": True}]}),
        classification_metrics=_artifact(ClassificationMetrics, folder / "classification", {
            "confusionMatrix": {"annotationSpecs": [{"displayName": "0"}, {"displayName": "1"}],
                                "rows": [{"row": [560, 102]}, {"row": [140, 211]}]},
            "confidenceMetrics": [{"falsePositiveRate": x / 10, "recall": min(1, x / 6)}
                                  for x in range(11)]}),
        evaluation_report=_artifact(Markdown, folder / "evaluation.md",
                                    text="| slice | candidate |\n"),
        infra_blessing=_artifact(Artifact, folder / "infra", {
            "infra_blessed": True, "reason": "served", "p50_ms": 6.9, "p99_ms": 17.4,
            "rps": 314.0}),
        infra_report=_artifact(Markdown, folder / "infra.md", text="# Infra validation\n"),
        pushed_model=_artifact(Artifact, folder / "pushed", {
            "pushed": True, "version": 2, "reason": "pushed as version 2; promoted"}),
        rollout_report=_artifact(Markdown, folder / "rollout.md", text="# Rollout\n"),
    )
    return found


def page(folder: Path) -> HTML:
    """run_report's output: the page."""
    return HTML(uri=str(folder / "report.html"))


# The notification settings of a run that configured no sink (the pipeline's defaults).
NO_SINKS = {"notify_email_to": [], "notify_email_from": "", "notify_smtp_host": "",
            "notify_smtp_port": 587, "notify_smtp_starttls": True,
            "notify_on": ["succeeded", "blocked", "failed"]}
