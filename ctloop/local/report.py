"""``ctloop report``: a local run's page, from the run's folder (each task's
``executor_output.json`` and reports, see ``local_run``), rendered by ``ctloop.report``, the
renderer the pipeline's ``run_report`` component uses too. Links to the run's views are relative
to where the page is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ctloop import beam_options, report
from ctloop.errors import ConfigError
from ctloop.local import runs
from ctloop.tuning import TRIALS_PAGE

REPORT_FILE = "report.html"
# Title -> (task, output) of the Markdown reports the page shows, and of the views it links to.
TEXTS = {"the data validation report (anomalies, every measure)": ("validate-data",
                                                                  "anomalies_report"),
         "the evaluation report (metrics per slice)": ("evaluate", "report"),
         "the infra validation report": ("infra-validate", "report"),
         "the rollout report": ("rollout", "report")}
VIEWS = {"TFDV statistics (Facets)": ("validate-data", "statistics_view"),
         "drift and skew table": ("validate-data", "drift_view"),
         "anomalies": ("validate-data", "anomalies_report"),
         "evaluation (TFMA)": ("evaluate", "report"),
         "infra validation": ("infra-validate", "report")}
# Task -> the output whose metadata ``beam`` says what Beam options the task ran with.
BEAM_STEPS = {"validate-data": "statistics", "evaluate": "blessing"}


def find_run(path: str | Path) -> Path:
    """A run's folder: ``path`` itself, or the latest run of the workdir ``path``.

    Raises:
        ConfigError: ``path`` is neither.
    """
    path = Path(path)
    if (path / "select-span").is_dir():
        return path
    root = path / "pipeline_root"
    found = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not found:
        raise ConfigError(f"{path} is neither a run's folder nor a workdir with runs; pass a "
                          "--workdir of `ctloop run` or one of its pipeline_root/ folders")
    return found[-1]


def write(run_dir: Path, output: Path | None = None) -> Path:
    """Writes the run's page (default: ``<run_dir>/report.html``); returns its path."""
    output = Path(output) if output else run_dir / REPORT_FILE
    return report.write(from_run_dir(run_dir, output.parent), output)


def from_run_dir(run_dir: Path, links_from: Path) -> report.Run:
    """What the run's folder holds, as the renderer reads it; links relative to ``links_from``."""
    from ctloop.local.runner import REPORT_TASK, TASKS

    outputs = {task: runs.task_outputs(run_dir, task) for task in TASKS}
    row = runs.run_row(run_dir)

    def meta(task: str, artifact: str) -> dict:
        return runs.artifact_metadata(outputs[task], artifact)

    # A task that failed or wrote nothing: the row's outcome says which and why. The pipeline's
    # own page is not one of the run's decisions (and older runs have none, nor a tune task).
    failed = row["outcome"] if any(outputs[t] is None for t in TASKS
                                   if t not in (REPORT_TASK, "tune")) else None
    return report.Run(
        title=f"ctloop run {row['time']}",
        spans=[int(s) for s in ((outputs["select-span"] or {}).get("parameterValues", {})
                                .get("spans_read") or [])],
        baseline=meta("load-baseline", "model"),
        data_valid=(outputs["validate-data"] or {}).get("parameterValues", {}).get("Output"),
        train_data=meta("ingest", "train_data"), eval_data=meta("ingest", "eval_data"),
        anomalies=meta("validate-data", "anomalies"), schema=meta("validate-data", "schema"),
        drift=meta("validate-data", "drift_metrics"),
        blessing=meta("evaluate", "blessing"),
        classification=meta("evaluate", "classification_metrics"),
        infra=meta("infra-validate", "infra_blessing"), pushed=meta("rollout", "pushed_model"),
        tuning=meta("tune", "best"), tuning_page=str(run_dir / "tune" / "best" / TRIALS_PAGE),
        failed=failed,
        texts={title: run_dir / task / name for title, (task, name) in TEXTS.items()},
        links={title: os.path.relpath(run_dir / task / name, links_from)
               for title, (task, name) in VIEWS.items() if (run_dir / task / name).exists()},
    )


def beam_steps(run_dir: Path) -> dict[str, dict]:
    """Task -> the Beam options it ran with (``beam_options.describe``), for each Beam task of
    the run that recorded them (a skipped evaluation ran no Beam)."""
    found = {}
    for task, artifact in BEAM_STEPS.items():
        path = Path(run_dir) / task / "executor_output.json"
        if not path.is_file():
            continue
        output = json.loads(path.read_text())
        metadata = runs.artifact_metadata(output, artifact)
        if metadata.get("beam"):
            found[task] = metadata["beam"]
    return found


def beam_line(steps: dict[str, dict]) -> str | None:
    """``beam: validate-data FnApiRunner, 1 worker (in_memory); evaluate ...`` (None: no step
    recorded its options)."""
    if not steps:
        return None
    return "beam: " + "; ".join(f"{task} {beam_options.summary(described)}"
                                for task, described in steps.items())
