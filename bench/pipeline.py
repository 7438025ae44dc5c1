"""Benchmark child: one CT iteration of the real pipeline, as `ctloop run` runs it (the CLI's
default settings) with the runner given (``in-process``, the default, or ``kfp-local``), on a
fresh workdir: a cold start.

Writes the run summary and each task's window (``time.time()`` instants), CPU time and disk
reads as JSON. kfp.local orders the tasks, one at a time. Under ``kfp-local`` each task is a
process; its window is that process's life, from launch to exit, timed around kfp.local's
launcher; its CPU time and disk reads are those of the process and its children (e.g. infra
validation's model server). Under ``in-process`` a task's window is its handler's run in this
process, and its CPU time and disk reads are this process's and its children's during it. The
summary's own ``timings_s`` bound the same tasks by kfp.local's log records
(``local_run.TaskClock``); the benchmark reports both.
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


def own_usage() -> tuple[float, float]:
    """``children_usage`` plus this process's own CPU seconds and disk reads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, read = children_usage()
    return (cpu + usage.ru_utime + usage.ru_stime,
            read + usage.ru_inblock * BLOCK_BYTES / MB)


def time_tasks(runner: str) -> dict[str, dict[str, float]]:
    """Times every task kfp.local runs from now on; returns task -> ``start``, ``end``,
    ``cpu_s`` and ``read_mb``, filled in as tasks run."""
    from kfp.local import subprocess_task_handler

    from ctloop.local import in_process

    windows: dict[str, dict[str, float]] = {}
    if runner == in_process.IN_PROCESS:
        run_task = in_process.InProcessTaskHandler.run

        def timed_run(handler):
            task = handler.function.replace("_", "-")
            started, (cpu, read) = time.time(), own_usage()
            try:
                return run_task(handler)
            finally:
                cpu_after, read_after = own_usage()
                windows[task] = {"start": started, "end": time.time(),
                                 "cpu_s": cpu_after - cpu, "read_mb": read_after - read}

        in_process.InProcessTaskHandler.run = timed_run
        return windows
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
    parser.add_argument("--runner", default="in-process", choices=["in-process", "kfp-local"],
                        help="The pipeline's runner (the floor has none) [default: %(default)s].")
    return parser.parse_args()


def main() -> None:
    args = child_args(__doc__)

    from ctloop.cli.common import end_process
    from ctloop.local import runner as local_run

    windows = time_tasks(args.runner)
    params = {"data_uri": args.data, "label": LABEL, "exclude": EXCLUDE,
              "model_name": MODEL_NAME, "serving_python": args.serving_python,
              # The floor pushes and serves with the bare libraries: the same work here.
              "release_stage": "production"}
    with local_run.output_to(str(args.workdir / "run.log")):
        summary = local_run.run(params, args.workdir, runner=args.runner)
    args.out.write_text(json.dumps({"summary": summary, "windows": windows},
                                   indent=2))
    end_process()  # as `ctloop run` ends (ctloop.cli.common.end_command)


if __name__ == "__main__":
    main()
