"""The run's page from its tasks' artifacts (no kfp import): what each artifact's metadata and
file says, as ``ctloop.report`` renders it. An artifact is anything with ``metadata`` (a dict)
and ``path`` (its file), as KFP hands input artifacts to a component; None when its task did not
run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from ctloop import report
from ctloop.tuning import TRIALS_PAGE

# Input -> the title of the Markdown report it is, shown folded on the page.
TEXTS = {"anomalies_report": "the data validation report (anomalies, every measure)",
         "evaluation_report": "the evaluation report (metrics per slice)",
         "infra_report": "the infra validation report",
         "rollout_report": "the rollout report"}


def build(spans: list, data_valid: Optional[bool], artifacts: Mapping[str, Any]) -> report.Run:
    """The run as the page reads it, from its tasks' artifacts (name -> artifact or None)."""

    def meta(name: str) -> dict:
        found = artifacts.get(name)
        return dict(found.metadata or {}) if found is not None else {}

    return report.Run(
        title="ctloop run",
        spans=[int(s) for s in spans or []],
        baseline=meta("baseline_schema"),
        data_valid=data_valid,
        train_data=meta("train_data"), eval_data=meta("eval_data"),
        anomalies=meta("anomalies"), schema=meta("schema"), drift=meta("drift_metrics"),
        blessing=meta("blessing"), classification=meta("classification_metrics"),
        infra=meta("infra_blessing"), pushed=meta("pushed_model"), tuning=meta("tuning"),
        tuning_page=(f"{artifacts['tuning'].path}/{TRIALS_PAGE}"
                     if artifacts.get("tuning") is not None else None),
        texts={title: artifacts[name].path for name, title in TEXTS.items()
               if artifacts.get(name) is not None and artifacts[name].path},
    )


def write(run: report.Run, path: str) -> dict[str, Any]:
    """Writes the page to ``path``; returns the run's decisions (the artifact's metadata)."""
    report.write(run, path)
    return report.decisions(run)
