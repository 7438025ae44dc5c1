"""A model server started ahead (``ctloop.serving.process.started_ahead``) is the server
``ctloop serve`` runs, handed its arguments later; and how a ctloop command's process ends."""

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import EXCLUDE, LABEL, child_pids
from ctloop.serving import client
from ctloop.serving import process as server_process

pytestmark = pytest.mark.serving
# In a server's command line while it waits for its model (other children of the test process,
# e.g. session fixtures' servers, do not have it).
AHEAD = b"ctloop.serving.ahead"


def test_a_server_started_ahead_serves_the_model_it_is_given_later(prepared, serving_python,
                                                                   tmp_path):
    log = tmp_path / "server.log"
    with server_process.started_ahead(serving_python):
        time.sleep(1.0)  # the model exists only later, as a CT run's candidate does
        with server_process.serve(serving_python, "churn", model_dir=str(prepared.model_dir),
                                  version=7, log_path=str(log)) as server:
            server.wait_ready("churn", 120)
            answers = client.predict_raw(server.url, "churn", _rows(prepared))
            ahead, pid = server.ahead_s, server.process.pid
        assert server.process.returncode == 0  # stopped by SIGTERM, ended at once, status 0
    assert ahead >= 1.0
    assert answers["model_version"] == "7"
    assert all(0.0 <= p <= 1.0 for p in answers["predictions"])
    # Its output reached the log it was given: the server's own start line.
    assert f"ctloop serving model 'churn' from {prepared.model_dir}" in log.read_text()
    assert pid not in child_pids()


def _the_server_ahead() -> int:
    """The pid of this process's server started ahead, once its command line shows it: between
    the fork and the exec the child's command line is still this process's."""
    deadline = time.monotonic() + 10
    while not (found := child_pids(AHEAD)) and time.monotonic() < deadline:
        time.sleep(0.05)
    (pid,) = found
    return pid


def _rows(prepared) -> list[dict]:
    frame = pd.read_parquet(prepared.eval).drop(columns=[LABEL, *EXCLUDE]).head(2)
    return json.loads(frame.to_json(orient="records"))


def test_a_server_started_ahead_and_never_used_is_stopped_at_the_end(serving_python):
    with server_process.started_ahead(serving_python):
        started = _the_server_ahead()
    assert started not in child_pids(AHEAD)


def test_serve_starts_its_own_server_when_the_one_started_ahead_died(prepared, serving_python):
    with server_process.started_ahead(serving_python):
        started = _the_server_ahead()
        subprocess.run(["kill", "-9", str(started)], check=True)
        time.sleep(0.2)
        with server_process.serve(serving_python, "churn",
                                  model_dir=str(prepared.model_dir)) as server:
            server.wait_ready("churn", 120)
            assert server.ahead_s == 0.0 and server.process.pid != started
            assert len(client.predict(server.url, "churn", _rows(prepared))) == 2


def test_nothing_is_started_ahead_for_a_python_that_does_not_exist(tmp_path):
    with server_process.started_ahead(str(tmp_path / "no-python")):
        assert child_pids(AHEAD) == []


def test_a_server_started_ahead_ends_when_its_run_is_killed(serving_python):
    """A run killed at once (SIGKILL: no cleanup of its own) leaves no server behind: the one
    it started ahead reads the end of its input and exits."""
    program = f"""
import os, signal, sys
from ctloop.serving import process
with process.started_ahead({serving_python!r}):
    (started,) = process._ahead.values()
    print(started[0].pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""
    killed = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert killed.returncode == -9
    pid = int(killed.stdout)
    deadline = time.monotonic() + 120  # it exits once its imports are done
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.2)
    assert not _running(pid)


def _running(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize(("argv0", "ended_early"), [("ctloop", True), ("pytest", False)])
def test_a_ctloop_command_ends_without_the_interpreters_teardown(tmp_path, argv0, ended_early):
    """``end_command`` runs the exit hooks (temporary folders are removed) and skips the
    teardown (an object's finalizer at interpreter exit), only in the command's own process."""
    program = f"""
import atexit, pathlib, sys
sys.argv[0] = {argv0!r}
class Finalized:
    def __del__(self):
        print("torn down", flush=True)
kept = Finalized()
atexit.register(pathlib.Path({str(tmp_path / 'hook')!r}).write_text, "exit hooks ran")
from ctloop.cli.common import end_command
end_command()
print("returned", flush=True)
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          check=True)
    assert (tmp_path / "hook").read_text() == "exit hooks ran"
    if ended_early:
        assert done.stdout == ""
    else:
        assert done.stdout.splitlines() == ["returned", "torn down"]


@pytest.mark.parametrize("valid", [True, False])
def test_a_local_run_starts_the_server_at_once_and_stops_it_when_its_data_is_invalid(
        serving_python, tmp_path, valid):
    """The in-process runner's listener: a server from the start; after validate-data, kept for
    valid data only."""
    from ctloop.local.runner import ServerAhead

    task = tmp_path / "run" / ServerAhead.AFTER
    task.mkdir(parents=True)
    (task / "executor_output.json").write_text(json.dumps({"parameterValues": {"Output": valid}}))
    ahead = ServerAhead(serving_python, lambda: tmp_path / "run")
    try:
        _the_server_ahead()
        ahead.launched("train", 0.0)
        ahead.exited("ingest", 0.0, True)
        assert len(child_pids(AHEAD)) == 1
        ahead.exited(ServerAhead.AFTER, 0.0, True)
        assert len(child_pids(AHEAD)) == (1 if valid else 0)
    finally:
        ahead.close()
    assert child_pids(AHEAD) == []
