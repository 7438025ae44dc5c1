"""What ``ctloop run`` shows while the tasks run: one line per task, its status and its time.

On a terminal the lines are a live view (rich), redrawn as kfp.local launches and finishes each
task and as the running task's time grows; anywhere else (CI, a pipe, a file) each task prints
one plain line when it ends, so logs stay readable. The events come from
``local_run.TaskClock``, which sees kfp.local's own log records.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import IO

WAITING, RUNNING, DONE, FAILED = "waiting", "running", "done", "failed"


class TaskProgress:
    """A progress view of the pipeline's tasks, used as a context manager around the run.

    Args:
        stream: Where the view is written (the terminal, captured before the tasks' output is
            sent to the log).
        tasks: The tasks, in the order they run.
        live: Redraw in place; default: whether ``stream`` is a terminal.
    """

    def __init__(self, stream: IO[str], tasks: Sequence[str], live: bool | None = None):
        self.stream = stream
        self.tasks = list(tasks)
        self.width = max(map(len, self.tasks), default=0)  # task names line up
        self.live = stream.isatty() if live is None else live
        # task -> (status, launched at, ended at), times as time.time()
        self.state: dict[str, tuple[str, float | None, float | None]] = {
            task: (WAITING, None, None) for task in self.tasks}
        self._view = None

    def __enter__(self) -> TaskProgress:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            # The run sends this process's own stdout/stderr to the log: the view must not
            # take them over.
            self._view = Live(get_renderable=self._render, refresh_per_second=4,
                              console=Console(file=self.stream), redirect_stdout=False,
                              redirect_stderr=False)
            self._view.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._view is not None:
            self._view.stop()
            self._view = None
        self.stream.flush()

    def launched(self, task: str, at: float) -> None:
        """kfp.local is starting ``task``'s process."""
        self._add(task)
        self.state[task] = (RUNNING, at, None)

    def exited(self, task: str, at: float, ok: bool) -> None:
        """``task``'s process has ended, successfully or not."""
        self._add(task)
        started = self.state[task][1]
        self.state[task] = (DONE if ok else FAILED, started if started is not None else at, at)
        if not self.live:
            self.stream.write(self.line(task) + "\n")
            self.stream.flush()

    def line(self, task: str, now: float | None = None) -> str:
        """One task's plain line: status, name, seconds."""
        status, started, ended = self.state[task]
        seconds = "" if started is None else f"{(ended or now or time.time()) - started:6.1f}s"
        return f"{status:<8} {task:<{self.width}} {seconds}".rstrip()

    def _add(self, task: str) -> None:
        if task not in self.state:  # a task this view was not told of: show it anyway
            self.tasks.append(task)
            self.state[task] = (WAITING, None, None)

    def _render(self):
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        now = time.time()
        marks = {WAITING: "[dim]·[/]", DONE: "[green]✓[/]", FAILED: "[red]✗[/]"}
        for task in self.tasks:
            status, started, ended = self.state[task]
            mark = Spinner("dots", style="cyan") if status == RUNNING else marks[status]
            seconds = "" if started is None else f"{(ended or now) - started:5.1f}s"
            style = {WAITING: "dim", FAILED: "red"}.get(status, "")
            name, shown = f"{task:<{self.width}}", f"{status:<8}"
            table.add_row(mark, f"[{style}]{name}[/]" if style else name,
                          f"[{style}]{shown}[/]" if style else shown, seconds)
        return table
