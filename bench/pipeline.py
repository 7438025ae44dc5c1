"""Benchmark child: one CT iteration of the real pipeline under kfp.local, as `ctloop run --local`
runs it (the CLI's default settings), on a fresh workdir: a cold start.

Writes the run summary and each task's window (``time.time()`` instants), CPU time and disk
reads as JSON.
kfp.local runs tasks one at a time, each as a process; a task's window is that process's life,
from launch to exit, timed around kfp.local's launcher; its CPU time and disk reads are those
of the process and its children (e.g. infra validation's model server). The summary's own
``timings_s`` bound the same processes by kfp.local's log records (``local_run.TaskClock``); the
benchmark reports both.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

LABEL = "churned"
EXCLUDE = ["customer_id"]
MODEL_NAME = "churn"
MB = 1024 * 1024
BLOCK_BYTES = 512  # the unit of ru_inblock


def children_usage() -> tuple[float, float]:
    """CPU seconds (user + system) and MB read from disk of this process's waited-for children
    and their descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_inblock * BLOCK_BYTES / MB


def time_tasks() -> dict[str, dict[str, float]]:
    """Times every task process kfp.local launches from now on; returns task -> ``start``,
    ``end``, ``cpu_s`` and ``read_mb``, filled in as tasks run."""
    from kfp.local import subprocess_task_handler

    windows: dict[str, dict[str, float]] = {}
    launch = subprocess_task_handler.run_local_subprocess

    def timed(full_command: list[str]) -> int:
        # A lightweight component's command names its function: select_span -> "select-span".
        task = full_command[full_command.index("--function_to_execute") + 1].replace("_", "-")
        started, (cpu, read) = time.time(), children_usage()
        try:
            return launch(full_command)
        finally:
            cpu_after, read_after = children_usage()
            windows[task] = {"start": started, "end": time.time(), "cpu_s": cpu_after - cpu,
                             "read_mb": read_after - read}

    subprocess_task_handler.run_local_subprocess = timed
    return windows


def child_args(description: str) -> argparse.Namespace:
    """The arguments of a measured child (this one, and the floor): data, workdir, out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", required=True, help="The data folder (span-<N>/ inside).")
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--serving-python", required=True)
    parser.add_argument("--out", required=True, type=Path, help="The JSON to write.")
    return parser.parse_args()


def main() -> None:
    args = child_args(__doc__)

    from ctloop import local_run

    windows = time_tasks()
    params = {"data_uri": args.data, "label": LABEL, "exclude": EXCLUDE,
              "model_name": MODEL_NAME, "serving_python": args.serving_python}
    with local_run.output_to(str(args.workdir / "run.log")):
        summary = local_run.run(params, args.workdir)
    args.out.write_text(json.dumps({"summary": summary, "windows": windows},
                                   indent=2))


if __name__ == "__main__":
    main()
