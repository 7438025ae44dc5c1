"""How a pipeline task's process ends: at once after its outputs, or with its reason recorded.

A task that imported TensorFlow, TFDV or TFMA spends 1 to 2 s after its work tearing the
interpreter down: finalizing some 7,000 modules and half a million objects, then TensorFlow's
C++ destructors (measured here: importing TFMA and exiting takes 1.2 s longer than importing it
and calling ``os._exit``). None of that is the task's work, and kfp.local (like a KFP pod) waits
for it before the next task starts.

kfp's executor logs "Wrote executor output file to ..." as its very last step, and only when the
function succeeded and its outputs were written. On that record this flushes the streams and the
logging handlers and exits with status 0. A task that fails never logs it and ends the usual way,
with kfp's traceback and exit status. Should a kfp release word that line differently, tasks
merely exit the slow way again (``tests/test_task_exit.py`` would say so).

A task that fails also leaves its one-line reason in ``FAILURE_FILE`` beside its executor output
file (the folder kfp.local and KFP's launcher give the task): a ctloop error's own message (the
input, what was wrong, the fix), or any other exception's type and message. ``ctloop run`` ends
with that line instead of pointing at a log.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

# kfp.dsl.executor_main's last log line of a successful task (kfp 2.13).
OUTPUTS_WRITTEN = "Wrote executor output file to "
EXECUTOR_MAIN = "kfp.dsl.executor_main"
FAILURE_FILE = "ctloop-failure.txt"


class _ExitAfterOutputs(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith(OUTPUTS_WRITTEN):
            logging.shutdown()  # flushes every handler, this record's included
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def reason(exc: BaseException) -> str:
    """A failure's one line: a ctloop error's own message, else the exception's type and message."""
    from ctloop.errors import CtloopError

    message = " ".join(str(exc).split())
    return message if isinstance(exc, CtloopError) else f"{type(exc).__name__}: {message}"


def _task_folder() -> Path | None:
    """The folder of the task's executor output file, from kfp's ``--executor_input``."""
    try:
        given = json.loads(sys.argv[sys.argv.index("--executor_input") + 1])
        return Path(given["outputs"]["outputFile"]).parent
    except (ValueError, IndexError, KeyError, TypeError):
        return None


def install() -> None:
    """In a process that kfp's executor runs, exit as soon as it has written the outputs, and on
    a failure, record its reason (``FAILURE_FILE``) before the usual traceback and exit.

    Anywhere else (a test calling the component's function, a notebook) this does nothing.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is None or spec.name != EXECUTOR_MAIN:
        return
    root = logging.getLogger()
    if not any(isinstance(h, _ExitAfterOutputs) for h in root.handlers):
        # After kfp's own handler, which prints the record to the task's log.
        root.addHandler(_ExitAfterOutputs())
    folder, default_hook = _task_folder(), sys.excepthook

    def record(kind, exc, trace):
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / FAILURE_FILE).write_text(reason(exc) + "\n")
            except OSError:  # the traceback below still says why
                pass
        default_hook(kind, exc, trace)

    sys.excepthook = record
