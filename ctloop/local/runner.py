"""Runs the CT pipeline on this machine with kfp.local and summarizes what each task decided.

kfp.local orchestrates the run in topological order, one task at a time. By default each task
runs inside this process (``ctloop.local.in_process``: the libraries are imported once per
run), and infra validation's model server is started with the run, importing on the other core
while the tasks before it run (``ServerAhead``); with the ``kfp-local``
runner, kfp.local's SubprocessRunner runs each as a subprocess of this interpreter, as KFP runs
a task per pod. Either way each task leaves
``executor_output.json`` (its output parameters and the metadata of its output artifacts) in
``<pipeline_root>/<run>/<task>/``. The summary is read from those files, so it reports exactly
what the tasks recorded. Its timings come from kfp.local's own log records, written just before
it launches each task and just after the task has ended (see ``TaskClock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctloop.errors import TaskFailedError, WorkdirBusyError
from ctloop.local import in_process, task_exit
from ctloop.serving import process as server_process
from ctloop.settings import SERVING_TARGET

# The data's tasks, the baseline's, then the gates in order (kfp.local may run the first two
# pairs in either order: neither needs the other), then the run's page.
REPORT_TASK = "run-report"
TASKS = ("select-span", "ingest", "resolve-baseline", "load-baseline", "validate-data", "tune",
         "train", "evaluate", "infra-validate", "rollout", REPORT_TASK)
# kfp.local's log lines around a task's process (task names in color codes, which are removed).
_LAUNCHED = re.compile(r"Executing task '(?P<task>[^']+)'$")
_EXITED = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>\w+)")
# kfp.local's error when a task failed (pipeline_orchestrator.py).
_FAILED = re.compile(r"Inner task failed: '(?P<task>[^']+)'")
_COLOR = re.compile(r"\x1b\[[0-9;]*m")
# _failure's line.
_FAILED_TASK = re.compile(r"task (?P<task>\S+) failed: ")
# Held (flock) by the run using a workdir: two runs in one workdir would mix their outputs.
WORKDIR_LOCK = ".lock"


class TaskClock(logging.Filter):
    """Notes when kfp.local launches each task's process and when the process has exited.

    kfp.local logs "Executing task '<task>'" through the root logger just before it starts a
    task's process, and "Task '<task>' finished with status ..." as soon as the process has
    exited. Installed as a filter of the root logger (kfp.local swaps that logger's handlers
    around each task, but not its filters), this sees both records; their creation times bound
    the task's process from launch to exit: its start, imports, work and teardown.
    """

    def __init__(self, *listeners: Any):
        super().__init__()
        self.launched: dict[str, float] = {}
        self.exited: dict[str, float] = {}
        self.listeners = [listener for listener in listeners if listener is not None]

    def filter(self, record: logging.LogRecord) -> bool:
        message = _COLOR.sub("", record.getMessage())
        if found := _LAUNCHED.match(message):
            self.launched[found["task"]] = record.created
            for listener in self.listeners:
                listener.launched(found["task"], record.created)
        elif found := _EXITED.match(message):
            self.exited[found["task"]] = record.created
            for listener in self.listeners:
                listener.exited(found["task"], record.created, found["status"] == "SUCCESS")
        return True

    def seconds(self) -> dict[str, float]:
        """Task -> seconds from its process's launch to its exit, for each task seen both
        times."""
        return {task: round(self.exited[task] - self.launched[task], 2)
                for task in self.launched if task in self.exited}


class ServerAhead:
    """A task listener that holds infra validation's model server, started ahead
    (``started_ahead``) when the run starts, and stops it once validate-data has found the data
    invalid (then no task will use it).

    Why at the start: until train, the run keeps to one core. validate-data's time is mostly
    its imports of TensorFlow and TFDV, which hold one interpreter lock, and its Beam work runs
    in this process too; the server's imports of TensorFlow and KServe take the other core
    meanwhile. Started later, they would share the cores with train, whose TensorFlow ops use
    both. Infra validation's task then hands the server the candidate
    (``ctloop.serving.ahead``).
    """

    AFTER = "validate-data"

    def __init__(self, serving_python: str, run_dir):
        self.run_dir = run_dir
        self.stack = contextlib.ExitStack()
        self.stack.enter_context(server_process.started_ahead(serving_python))

    def launched(self, task: str, at: float) -> None:
        pass

    def exited(self, task: str, at: float, ok: bool) -> None:
        if task == self.AFTER and not (ok and self._data_valid()):
            self.close()

    def _data_valid(self) -> bool:
        """validate-data's verdict, from its executor output."""
        output = json.loads((self.run_dir() / self.AFTER / "executor_output.json").read_text())
        return bool(output.get("parameterValues", {}).get("Output"))

    def close(self) -> None:
        """Stops the server unless a task has adopted it."""
        self.stack.close()


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Holds the workdir's lock (``WORKDIR_LOCK``, flock) while a run uses it.

    Raises:
        WorkdirBusyError: Another run holds it; at once, without waiting.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / WORKDIR_LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusyError(
                f"workdir {workdir} is in use by another `ctloop run` (it holds "
                f"{workdir / WORKDIR_LOCK}); wait for that run to finish, or pass another "
                "--workdir") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holding_the_workdir(function):
    """``run`` under ``workdir_lock``, taken before anything else (imports included)."""

    @functools.wraps(function)
    def holding(params: dict[str, Any], workdir: Path, *args: Any, **kwargs: Any):
        with workdir_lock(Path(workdir).resolve()):
            return function(params, workdir, *args, **kwargs)

    return holding


@_holding_the_workdir
def run(params: dict[str, Any], workdir: Path, listener: Any = None,
        runner: str = in_process.IN_PROCESS) -> dict[str, Any]:
    """Runs one CT iteration locally; returns the run summary.

    Args:
        params: The pipeline's parameters (``registry_uri`` defaults to ``workdir/registry``).
        workdir: Holds ``pipeline_root/`` (every task's outputs) and ``registry/``.
        listener: Told when each task is launched and has exited (``launched(task, at)``,
            ``exited(task, at, ok)``), e.g. ``progress.TaskProgress``.
        runner: ``in-process`` (each task in this process) or ``kfp-local`` (each task a
            process of its own, kfp.local's SubprocessRunner).
    """
    from kfp import local

    from ctloop.pipelines.ct_pipeline import PIPELINE_NAME, build

    if runner not in in_process.RUNNERS:
        raise ValueError(f"runner {runner!r} is not one of {', '.join(in_process.RUNNERS)}")
    # kfp.local cannot run dsl.If: the tasks after a gate get its value and skip their work
    # themselves when it failed.
    pipeline = build(conditions=False)

    workdir = Path(workdir).resolve()
    root = workdir / "pipeline_root"
    root.mkdir(parents=True, exist_ok=True)
    params = {"registry_uri": str(workdir / "registry"), **params}
    before = set(root.iterdir())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    root_logger = logging.getLogger()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        ahead = None
        if runner == in_process.IN_PROCESS:
            stack.enter_context(in_process.tasks_in_process())
            if params.get("serving_target", SERVING_TARGET) == "local":
                ahead = ServerAhead(params.get("serving_python", ""),
                                    lambda: _new_run(root, before, PIPELINE_NAME))
                stack.callback(ahead.close)
        clock = TaskClock(listener, ahead)
        root_logger.addFilter(clock)
        try:
            pipeline(**params)
        except RuntimeError as exc:  # kfp.local: a task failed
            run_dir = _new_run(root, before, PIPELINE_NAME)
            failure = _failure(exc, run_dir)
            _notify_failed(params, failure, run_dir)
            raise TaskFailedError(failure) from exc
        finally:
            root_logger.removeFilter(clock)
    timings = {**clock.seconds(), "total": round(time.monotonic() - started, 2)}
    return summarize(_new_run(root, before, PIPELINE_NAME), timings)


def _new_run(root: Path, before: set[Path], name: str) -> Path:
    (run_dir,) = [p for p in set(root.iterdir()) - before if p.name.startswith(name)]
    return run_dir


def _failure(exc: RuntimeError, run_dir: Path) -> str:
    """The failed task and its own reason (``task_exit.FAILURE_FILE``), in one line."""
    found = _FAILED.search(_COLOR.sub("", str(exc)))
    if not found:
        return _COLOR.sub("", str(exc))
    task = found["task"]
    recorded = run_dir / task / task_exit.FAILURE_FILE
    why = recorded.read_text().strip() if recorded.is_file() else "its log says why"
    return f"task {task} failed: {why}"


def _notify_failed(params: dict[str, Any], failure: str, run_dir: Path) -> None:
    """Sends the "failed" message of a local run (which task, its reason) to the sinks the
    pipeline's notify_* parameters and the environment configure: on a cluster the exit
    handler's notify_failure task does, which kfp.local cannot run. A sink that is down is
    logged, never raised."""
    from ctloop import notify

    try:
        settings = notify.Settings.from_environment(
            **{name: params[name] for name in notify.PARAMETERS if name in params})
    except ValueError as exc:  # a bad notify_on: the task's failure is what the run reports
        logging.getLogger(__name__).warning("notify: not sent: %s", exc)
        return
    found = _FAILED_TASK.match(failure)
    notify.send(notify.Message(
        outcome=notify.FAILED, title=f"ctloop run failed: {found['task'] if found else 'a task'}",
        decision=failure, numbers={"task": found["task"]} if found else {},
        links={"run folder": str(run_dir)}), settings)


@contextlib.contextmanager
def output_to(log_path: str | None) -> Iterator[None]:
    """Sends this process's output, and so every task subprocess's, to ``log_path``: the file
    descriptors (what native code writes) and ``sys.stdout``/``sys.stderr`` (what kfp.local
    prints of each task, wherever those point, e.g. a test's capture)."""
    if not log_path:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def summarize(run_dir: Path, timings_s: dict[str, float]) -> dict[str, Any]:
    """Builds the run summary from the tasks' executor outputs under ``run_dir``.

    Args:
        run_dir: The run's folder in the pipeline root.
        timings_s: Task -> seconds its process ran (``TaskClock``), and "total": the pipeline's
            wall time, with its compilation and the hand-offs between tasks.
    """
    outputs = {task: json.loads((run_dir / task / "executor_output.json").read_text())
               for task in TASKS}

    def meta(task: str, artifact: str) -> dict[str, Any]:
        return outputs[task]["artifacts"][artifact]["artifacts"][0]["metadata"]

    def params(task: str) -> dict[str, Any]:
        return outputs[task].get("parameterValues", {})

    def version(value: Any) -> int | None:  # KFP metadata numbers come back as floats
        return None if value is None else int(value)

    train_meta, eval_meta = meta("ingest", "train_data"), meta("ingest", "eval_data")
    blessing, pushed = meta("evaluate", "blessing"), meta("rollout", "pushed_model")
    infra, baseline = meta("infra-validate", "infra_blessing"), meta("load-baseline", "model")
    skipped = {task: reason for task, reason in (
        ("train", meta("train", "model").get("skipped")), ("evaluate", blessing.get("skipped")),
        ("infra-validate", infra.get("skipped"))) if reason}
    return {
        "run_dir": str(run_dir),
        "span": int(params("select-span")["span"]),
        # kfp hands List[int] outputs back as floats.
        "spans": [int(s) for s in params("select-span")["spans_read"]],
        "data_fingerprint": params("select-span")["fingerprint"],
        "files": params("select-span")["files"],
        "rows": {"train": int(train_meta["rows"]), "eval": int(eval_meta["rows"])},
        # The one baseline every task of the run was judged against (load_baseline's).
        "baseline_version": version(baseline.get("version")),
        "baseline_fingerprint": baseline.get("fingerprint"),
        "data_valid": params("validate-data")["Output"],
        "anomaly_count": int(meta("validate-data", "anomalies")["anomaly_count"]),
        "blocking_anomaly_count": int(meta("validate-data", "anomalies")["blocking_count"]),
        "drift": meta("validate-data", "drift_metrics"),
        "previous_span": version(meta("validate-data", "statistics").get("previous_span")),
        "schema_source": meta("validate-data", "schema").get("source"),
        "tuning": meta("tune", "best"),
        "training": meta("train", "training_metrics"),
        "skipped": skipped,
        "metrics": blessing.get("metrics", {}),
        "baseline_metrics": blessing.get("baseline_metrics", {}),
        "blessed": blessing.get("blessed"),
        "blessing_reason": blessing.get("reason"),
        "infra_blessed": infra.get("infra_blessed"),
        "infra_reason": infra.get("reason"),
        "infra": {k: infra[k] for k in ("startup_s", "max_abs_diff", "p50_ms", "p99_ms", "rps")
                  if k in infra},
        "pushed": pushed["pushed"],
        "promoted": pushed.get("promoted"),
        "pushed_version": pushed.get("version"),
        "push_reason": pushed["reason"],
        "reports": {
            "statistics_html": str(run_dir / "validate-data" / "statistics_view"),
            "anomalies_md": str(run_dir / "validate-data" / "anomalies_report"),
            "drift_html": str(run_dir / "validate-data" / "drift_view"),
            "tune_html": str(run_dir / "tune" / "report"),
            "evaluation_md": str(run_dir / "evaluate" / "report"),
            "infra_md": str(run_dir / "infra-validate" / "report"),
            "run_html": str(run_dir / REPORT_TASK / "report"),
        },
        "timings_s": timings_s,
    }


def describe(summary: dict[str, Any]) -> str:
    """A short human summary of a run: what was checked, the verdicts, and where the reports are."""
    metrics = summary["metrics"]
    baseline = summary["baseline_version"]
    skipped = summary.get("skipped", {})
    lines = [
        f"{_spans(summary['spans'])}: {summary['rows']['train']} train / "
        f"{summary['rows']['eval']} eval rows (fingerprint {summary['data_fingerprint'][:12]})",
        f"data validation: {'passed' if summary['data_valid'] else 'FAILED'} "
        f"({summary['anomaly_count']} anomalies, {summary['blocking_anomaly_count']} blocking; "
        f"schema {summary['schema_source']})",
        _largest_distances(summary["drift"], summary["previous_span"]),
    ]
    if summary.get("tuning", {}).get("tuned"):
        lines.append(f"tuning: {summary['tuning']['verdict']}")
    if "train" in skipped:
        lines.append(f"candidate: not trained ({skipped['train']})")
    elif "evaluate" in skipped:
        lines.append(f"candidate: not evaluated ({skipped['evaluate']})")
    else:
        lines.append("candidate: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    if baseline is None:
        lines.append("baseline: none (cold start)")
    elif summary["baseline_metrics"]:
        lines.append(
            f"baseline v{baseline}: "
            + ", ".join(f"{k}={v:.4f}" for k, v in sorted(summary["baseline_metrics"].items())))
    else:
        lines.append(f"baseline v{baseline}: not compared")
    if "evaluate" not in skipped:
        lines.append(f"blessed: {summary['blessed']} ({summary['blessing_reason']})")
    if "infra-validate" in skipped:
        lines.append(f"infra validation: skipped ({skipped['infra-validate']})")
    else:
        lines.append(
            f"infra-blessed: {summary['infra_blessed']} ({summary['infra_reason']})" + (
                f"; p50 {summary['infra']['p50_ms']:.1f} ms, p99 {summary['infra']['p99_ms']:.1f}"
                f" ms, {summary['infra']['rps']:.0f} req/s" if "p99_ms" in summary["infra"]
                else ""))
    lines += [
        f"rollout: {summary['push_reason']}",
        "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in summary["timings_s"].items()),
        f"reports in {summary['run_dir']}/:",
    ]
    names = {"statistics_html": "data statistics", "anomalies_md": "anomalies",
             "drift_html": "drift and skew", "evaluation_md": "evaluation",
             "infra_md": "infra validation", "run_html": "the run's page",
             "tune_html": "tuning"}
    lines += [f"  {names.get(key, key):<17} {Path(path).relative_to(summary['run_dir'])}"
              for key, path in summary["reports"].items()]
    return "\n".join(lines)


def _largest_distances(distances: dict[str, float], previous_span: int | None) -> str:
    def top(kind: str) -> str:
        found = {k.split(".", 1)[1]: v for k, v in distances.items() if k.startswith(kind + ".")}
        if not found:
            return f"{kind}: not measured"
        name = max(found, key=found.get)
        return f"{kind}: max {found[name]:.3f} ({name})"

    against = f"vs span {previous_span}" if previous_span is not None else "no earlier span"
    return f"{top('drift')} [{against}], {top('skew')} [train vs eval]"


def _spans(spans: list[int]) -> str:
    return f"span {spans[0]}" if len(spans) == 1 else "spans " + ", ".join(map(str, spans))
