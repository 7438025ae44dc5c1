"""Starting `ctloop serve` from the serving environment as a child process, and stopping it.

Standard library only: the pipeline environment (which has no kserve) starts servers of the
serving environment (which has no TFDV) this way, e.g. for infra validation.

Within ``started_ahead``, the next ``serve`` from that serving environment adopts a process
started at the block's beginning, which has imported the model server meanwhile
(``ctloop.serving.ahead``): the same server, with the same arguments, ready seconds sooner.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from ctloop.errors import ConfigError, ModelError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A running model server: its base URL and its log."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path, ahead_s: float = 0.0):
        self.process, self.url, self.log = process, url, log
        # Started ahead (``started_ahead``): seconds between its start and its arguments.
        self.ahead_s = ahead_s

    def log_tail(self, lines: int = 5) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])

    def wait_ready(self, model_name: str, timeout_s: float) -> float:
        """Waits until the model answers ready; returns the seconds it took.

        Raises:
            ModelError: The server exited, or was not ready within ``timeout_s``; the message
                carries the end of its log.
        """
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise ModelError(
                    f"model server exited with code {self.process.returncode} before it was "
                    f"ready: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models/{model_name}", timeout=2):
                    return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise ModelError(
            f"model server not ready after {timeout_s:.0f} s: {self.log_tail()}"
        )


@contextlib.contextmanager
def serve(serving_python: str, model_name: str, *, model_dir: str | None = None,
          registry: str | None = None, version: int | None = None, port: int | None = None,
          max_batch: int | None = None, log_path: str | None = None,
          request_log: bool = False, extra_args: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """Runs ``ctloop serve`` (a model folder or a registry) until the block ends.

    Args:
        serving_python: The python of the serving environment (kserve installed).
        model_name: The model's name in request paths.
        model_dir: Serve this model folder, or
        registry: serve this registry's serving version.
        version: With ``model_dir``: the registry version the folder holds (answers carry it);
            with ``registry``: serve this version instead of following the serving one.
        port: The HTTP port on 127.0.0.1 (default: a free one).
        max_batch: The most rows per request (default: the server's).
        log_path: Keep the server's log here (default: a temporary file, deleted at the end).
        request_log: Log a line per request too.
        extra_args: More ``ctloop serve`` flags, e.g. ``["--record-dir", DIR]``.
    """
    if not serving_python or not Path(serving_python).exists():
        raise ConfigError(
            f"serving python {serving_python!r} does not exist; pass the python of the serving "
            "environment (`make` builds it at .venv/serving/bin/python)"
        )
    port = port or free_port()
    source = ["--model-dir", model_dir] if model_dir else ["--registry", registry]
    source += ["--version", str(version)] if version is not None else []
    args = [*source, "--model-name", model_name, "--port", str(port),
            *(["--max-batch", str(max_batch)] if max_batch else []),
            *(["--request-log"] if request_log else []), *extra_args]
    log = Path(log_path) if log_path else Path(
        tempfile.NamedTemporaryFile(prefix="ctloop-serve-", suffix=".log", delete=False).name)
    log.write_text("")
    process, ahead_s = _adopt(serving_python, args, log)
    if process is None:
        with open(log, "w") as handle:
            process = subprocess.Popen([serving_python, "-m", "ctloop.cli", "serve", *args],
                                       stdout=handle, stderr=subprocess.STDOUT)
    try:
        yield ServerProcess(process, f"http://127.0.0.1:{port}", log, ahead_s)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        if not log_path:
            log.unlink(missing_ok=True)


# serving python -> (a process started ahead that waits for its arguments, when it started)
_ahead: dict[str, tuple[subprocess.Popen, float]] = {}


@contextlib.contextmanager
def started_ahead(serving_python: str) -> Iterator[None]:
    """Starts a model server process of ``serving_python`` now, which the first ``serve`` from
    that environment within the block adopts; stops it at the end if none did.

    A server for a model that does not exist yet (a CT run's candidate) costs only the time its
    ``serve`` takes to load the model; the imports ran meanwhile, on another core. Nothing is
    started for a ``serving_python`` that does not exist (``serve`` says what is wrong).
    """
    if not serving_python or not Path(serving_python).exists():
        yield
        return
    waiting = _ahead.get(serving_python)
    if waiting is not None and waiting[0].poll() is None:  # another block's, still waiting
        yield
        return
    process = subprocess.Popen([serving_python, "-m", "ctloop.serving.ahead"],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, text=True)
    _ahead[serving_python] = process, time.monotonic()
    try:
        yield
    finally:
        if _ahead.get(serving_python, (None,))[0] is process:
            del _ahead[serving_python]
            process.stdin.close()  # end of input: it exits once its imports are done
            process.terminate()
            process.wait(timeout=30)


def _adopt(serving_python: str, args: list[str], log: Path
           ) -> tuple[subprocess.Popen | None, float]:
    """The process started ahead for ``serving_python``, given ``args`` and ``log``, and the
    seconds it had been running; (None, 0.0) when there is none or it has exited."""
    process, started = _ahead.pop(serving_python, (None, 0.0))
    if process is None:
        return None, 0.0
    try:
        process.stdin.write(json.dumps({"args": args, "log": str(log)}) + "\n")
        process.stdin.close()
    except (BrokenPipeError, OSError):
        process.poll()
    if process.returncode is not None or process.poll() is not None:
        process.wait()
        return None, 0.0
    return process, time.monotonic() - started
