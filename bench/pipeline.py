"""Benchmark child: one CT iteration of the real pipeline under kfp.local, as `ctloop run --local`
runs it (the CLI's default settings), on a fresh workdir: a cold start.

Writes the run summary and each task's time window (``time.time()`` instants) as JSON. A task's
window runs from the end of the previous task (the start of the run for the first) to the moment
it wrote its ``executor_output.json``: kfp.local runs tasks one at a time, so the window holds
the task's process start, its imports and its work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LABEL = "churned"
EXCLUDE = ["customer_id"]
MODEL_NAME = "churn"


def task_windows(summary: dict) -> dict[str, list[float]]:
    """Task -> [start, end] from the tasks' executor outputs under the summary's run folder."""
    from ctloop import local_run

    ends = [(Path(summary["run_dir"]) / task / "executor_output.json").stat().st_mtime
            for task in local_run.TASKS]
    starts = [ends[-1] - summary["timings_s"]["total"]] + ends[:-1]
    return {task: [start, end]
            for task, start, end in zip(local_run.TASKS, starts, ends, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="The data folder (span-<N>/ inside).")
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--serving-python", required=True)
    parser.add_argument("--out", required=True, type=Path, help="The JSON to write.")
    args = parser.parse_args()

    from ctloop import local_run

    params = {"data_uri": args.data, "label": LABEL, "exclude": EXCLUDE,
              "model_name": MODEL_NAME, "serving_python": args.serving_python}
    with local_run.output_to(str(args.workdir / "run.log")):
        summary = local_run.run(params, args.workdir)
    args.out.write_text(json.dumps({"summary": summary, "windows": task_windows(summary)},
                                   indent=2))


if __name__ == "__main__":
    main()
