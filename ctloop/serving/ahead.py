"""A ``ctloop serve`` process started ahead: it imports the model server now and takes its
arguments later (``ctloop.serving.process.started_ahead``).

Importing TensorFlow and KServe takes the serving environment several seconds, before a server
can load a model. A local CT run starts this process at its beginning, so that the import runs on
another core while the run validates, trains and evaluates; infra validation then hands it the
``ctloop serve`` arguments of its candidate and the server only loads the model. The server it
runs is the one ``python -m ctloop.cli serve`` runs, with the same arguments.

The protocol, on standard input: one JSON line ``{"args": [...], "log": PATH}``. The process
sends its output to ``log`` from then on and runs ``ctloop serve`` with ``args``. End of input
before that line (the run ended, or its process died) ends the process quietly.
"""

import gc
import json
import os
import sys


def main() -> int:
    # What `ctloop serve` imports when it runs (ctloop.cli.serve imports these inside the
    # command): the slow part of a server's start.
    import ctloop.registry  # noqa: F401
    import ctloop.serving.recorder  # noqa: F401
    import ctloop.serving.server  # noqa: F401
    from ctloop.cli import main as cli

    # What the imports left is kept for good: no full collection walks it in the middle of the
    # requests infra validation times (a fresh server collects while it imports, before ready).
    gc.collect()
    gc.freeze()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    request = json.loads(line)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return cli.main(["serve", *request["args"]], prog_name="ctloop")


if __name__ == "__main__":
    sys.exit(main())
