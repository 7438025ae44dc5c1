"""The progress view of `ctloop run`, fed kfp.local's own log records through TaskClock."""

import io
import logging

from ctloop.local import runner as local_run
from ctloop.local.progress import TaskProgress

# kfp.local's records around a task's process, task names in its color codes.
COLOR = "\x1b[96m'{task}'\x1b[0m"


def _record(message: str, at: float) -> logging.LogRecord:
    record = logging.LogRecord("root", logging.INFO, __file__, 1, message, None, None)
    record.created = at
    return record


def _feed(clock: local_run.TaskClock, events):
    for kind, task, at, *status in events:
        name = COLOR.format(task=task)
        message = (f"Executing task {name}" if kind == "launch" else
                   f"Task {name} finished with status \x1b[92m{status[0]}\x1b[0m")
        clock.filter(_record(message, at))


def test_without_a_terminal_each_task_prints_one_plain_line_when_it_ends():
    out = io.StringIO()
    with TaskProgress(out, local_run.TASKS) as progress:
        clock = local_run.TaskClock(progress)
        _feed(clock, [("launch", "select-span", 100.0), ("exit", "select-span", 101.25, "SUCCESS"),
                      ("launch", "ingest", 101.5), ("exit", "ingest", 104.0, "FAILURE")])
    assert out.getvalue().splitlines() == [
        "done     select-span         1.2s",
        "failed   ingest              2.5s"]
    assert clock.seconds() == {"select-span": 1.25, "ingest": 2.5}
    assert progress.line("train") == "waiting  train"


def test_on_a_terminal_the_view_shows_every_task_with_its_status():
    out = io.StringIO()
    with TaskProgress(out, local_run.TASKS, live=True) as progress:
        clock = local_run.TaskClock(progress)
        _feed(clock, [("launch", "select-span", 100.0), ("exit", "select-span", 102.0, "SUCCESS"),
                      ("launch", "ingest", 102.0)])
    shown = out.getvalue()
    for task in local_run.TASKS:
        assert task in shown
    final = shown.splitlines()[-len(local_run.TASKS):]
    assert "select-span" in final[0] and "done" in final[0] and "2.0s" in final[0]
    assert "ingest" in final[1] and "running" in final[1]
    train = final[local_run.TASKS.index("train")]
    assert "train" in train and "waiting" in train
