"""The run's page from its tasks' artifacts (no kfp import): what each artifact's metadata and
file says, as ``ctloop.report`` renders it. An artifact is anything with ``metadata`` (a dict)
and ``path`` (its file), as KFP hands input artifacts to a component; None when its task did not
run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from ctloop import notify, report
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


def message(run: report.Run, decisions: Mapping[str, Any], page_uri: str) -> notify.Message:
    """The run's end as a notification: succeeded (a version pushed and promoted, or staged),
    else blocked (a gate stopped it: data, blessing, infra validation, or the canary rolled it
    back); the decision, the key numbers, and where the page is (``page_uri``)."""
    pushed = decisions["pushed_version"]
    # Pushed but not promoted (a canary rolled back, another run promoted first) serves nothing
    # new: the run was blocked, though a version was written. Staged: it waits for promotion.
    served = pushed is not None and (run.pushed.get("promoted") is not False
                                     or bool(run.pushed.get("staged")))
    outcome = notify.SUCCEEDED if served else notify.BLOCKED
    spans = ", ".join(str(s) for s in run.spans) or "-"
    numbers: dict[str, Any] = {"spans": spans, "baseline": decisions["baseline"]}
    if run.train_data.get("rows") is not None and run.eval_data.get("rows") is not None:
        numbers["rows (train / eval)"] = (f"{int(run.train_data['rows'])} / "
                                          f"{int(run.eval_data['rows'])}")
    if run.anomalies.get("blocking_count") is not None:
        numbers["blocking anomalies"] = int(run.anomalies["blocking_count"])
    for name, value in sorted((run.blessing.get("metrics") or {}).items()):
        numbers[f"candidate {name}"] = value
    for name, value in sorted((run.blessing.get("baseline_metrics") or {}).items()):
        numbers[f"baseline {name}"] = value
    for key, label in (("p99_ms", "infra p99 ms"), ("rps", "infra req/s")):
        if run.infra.get(key) is not None:
            numbers[label] = run.infra[key]
    if pushed is not None:
        numbers["pushed version"] = pushed
    return notify.Message(outcome=outcome, title=f"{run.title} {outcome}: span {spans}",
                          decision=str(decisions["outcome"]), numbers=numbers,
                          links={"run page": page_uri})
