"""Runs kfp.local's tasks inside this process instead of one new process per task.

kfp.local's SubprocessRunner gives each task a new interpreter that imports TensorFlow, TFDV or
TFMA again (several seconds a task) and then tears it down. Here kfp.local still does everything
it does for a pipeline: compiling it, ordering the tasks, building each task's executor input
(its parameters, its input artifacts from the upstream tasks' outputs, its output URIs under
``<pipeline_root>/<run>/<task>/``), logging each launch and exit, reading the outputs back and
failing the run on a failed task. Only the one step that starts a process is replaced: the
task's own program (the component's source as compiled into the pipeline, what KFP's executor
loads) is loaded here, once per run, and kfp's own ``Executor`` runs it on the same executor
input, writing the same ``executor_output.json``. Heavy libraries are imported by the first task
that needs them and stay imported for the next.

What differs from a process per task: a component sees the libraries earlier tasks imported, and
a crash of native code ends the run's process rather than one task's (the registry stays whole
either way: it changes only by atomic renames). A task that raises fails the run as it does
under kfp.local, with its one-line reason in ``task_exit.FAILURE_FILE`` and its traceback in the
task's log.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import subprocess
import sys
import traceback
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctloop.local import task_exit

IN_PROCESS, KFP_LOCAL = "in-process", "kfp-local"
RUNNERS = (IN_PROCESS, KFP_LOCAL)
# The launcher of a lightweight Python component (kfp.dsl.component_factory).
_EXECUTOR_MODULE = "kfp.dsl.executor_main"
_registered: list = []


class InProcessTaskHandler:
    """kfp.local's task handler interface (``image``, ``full_command``, ``pipeline_root``,
    ``runner``; ``run() -> Status``), running the task's component in this process."""

    # One module per distinct component program, for the whole process: a program's text is its
    # identity (placeholders are in the arguments, not in the program).
    _loaded: dict[str, types.ModuleType] = {}

    def __init__(self, image: str, full_command: list[str], pipeline_root: str, runner: Any):
        self.image = image
        self.full_command = list(full_command)
        self.pipeline_root = pipeline_root
        self.runner = runner
        self.program, self.executor_input, self.function = _parse(self.full_command)

    def run(self):
        """Runs the task; SUCCESS once kfp's executor has written its outputs, else FAILURE."""
        from kfp.dsl.executor import Executor
        from kfp.local import status

        folder = Path(self.executor_input["outputs"]["outputFile"]).parent
        # The task sees the sys.path a task process starts with, not this process's: libraries
        # extend it as they import (IPython its extensions, setuptools its vendored packages),
        # and rollout's run record would list setuptools' vendored packages as installed.
        path = list(sys.path)
        sys.path[:] = _task_path()
        try:
            function = getattr(self._module(), self.function)
            Executor(executor_input=self.executor_input,
                     function_to_execute=function).execute()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the task's failure, recorded
            # What a task process does on a failure (task_exit.install): its reason in one line
            # beside its outputs, the traceback in its log.
            folder.mkdir(parents=True, exist_ok=True)
            (folder / task_exit.FAILURE_FILE).write_text(task_exit.reason(exc) + "\n")
            traceback.print_exc(file=sys.stdout)
            return status.Status.FAILURE
        finally:
            sys.path[:] = path
        return status.Status.SUCCESS

    def _module(self) -> types.ModuleType:
        module = self._loaded.get(self.program)
        if module is None:
            name = f"ctloop_task_{self.function}_{len(self._loaded)}"
            module = types.ModuleType(name)
            module.__file__ = f"<{name}>"
            sys.modules[name] = module
            # dont_inherit: this module's own `from __future__ import annotations` would turn
            # the component's annotations into strings, which kfp's executor cannot read.
            code = compile(self.program, module.__file__, "exec", dont_inherit=True)
            exec(code, module.__dict__)  # noqa: S102 - the component's program, as KFP runs it
            self._loaded[self.program] = module
        return module


@functools.cache
def _task_path() -> tuple[str, ...]:
    """The sys.path of a task process (``python -m ...`` in this directory): a new interpreter's,
    asked once (a bare interpreter starts in some 20 ms)."""
    found = subprocess.run(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"],
        capture_output=True, text=True, check=True)
    return (os.getcwd(), *json.loads(found.stdout))


def _parse(full_command: list[str]) -> tuple[str, dict[str, Any], str]:
    """The component's program, its executor input and its function's name, from the command
    kfp.local would run: ``sh -ec <launcher> <program> --executor_input <json>
    --function_to_execute <name>``."""
    try:
        given = full_command.index("--executor_input")
        launcher, program = full_command[given - 2], full_command[given - 1]
        function = full_command[full_command.index("--function_to_execute") + 1]
        executor_input = json.loads(full_command[given + 1])
    except (ValueError, IndexError) as exc:
        raise RuntimeError(f"the in-process runner runs lightweight Python components only; "
                           f"got the command {full_command[:3]}: run with kfp-local") from exc
    if _EXECUTOR_MODULE not in launcher:
        raise RuntimeError(f"the in-process runner runs lightweight Python components only; "
                           f"{function} is not one: run with kfp-local")
    return program, executor_input, function


def _quiet_teardown() -> None:
    """At interpreter exit, drop what TensorFlow's finalizers raise once the modules they use
    have been torn down (``AtomicFunction.__del__``: "'NoneType' object is not subscriptable",
    once per traced function): noise after the run, about nothing the run did."""
    default = sys.unraisablehook

    def hook(unraisable) -> None:
        if not getattr(unraisable.object, "__module__", "").startswith("tensorflow"):
            default(unraisable)

    sys.unraisablehook = hook


@contextlib.contextmanager
def tasks_in_process() -> Iterator[None]:
    """While inside, kfp.local's SubprocessRunner runs each task in this process."""
    from kfp.local import subprocess_task_handler

    if _quiet_teardown not in _registered:
        atexit.register(_quiet_teardown)
        _registered.append(_quiet_teardown)

    saved = subprocess_task_handler.SubprocessTaskHandler
    subprocess_task_handler.SubprocessTaskHandler = InProcessTaskHandler
    try:
        yield
    finally:
        subprocess_task_handler.SubprocessTaskHandler = saved
