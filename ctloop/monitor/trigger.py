"""The retraining trigger: one CT run (``ctloop run`` or ``ctloop submit``) per drift episode,
after a cool-down."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time
from typing import Any

from ctloop.errors import ConfigError
from ctloop.monitor import store
from ctloop.monitor.measure import Result


@dataclasses.dataclass(frozen=True)
class Trigger:
    """What the trigger did: ``started`` a run (its command and exit code), or why not."""

    started: bool
    reason: str
    command: list[str] = dataclasses.field(default_factory=list)
    exit_code: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def trigger(result: Result, state_path: str | os.PathLike[str], command: list[str],
            cooldown_s: float, now: float | None = None,
            s3_endpoint_url: str | None = None) -> Trigger:
    """Starts ``command`` (a CT run) when ``result`` decides drift, once per drift episode.

    An episode starts with a drift decision and ends with a no-drift decision on enough rows,
    or when the serving version changes (a new model serves: a new reference). One episode
    starts at most one run, and no run starts within ``cooldown_s`` of the last one, so a
    monitor on a schedule cannot start a run per pass. The state file is written before the
    run starts: a monitor killed during the run does not start another for the same episode.
    The state is a local file or an ``s3://`` object (``s3_endpoint_url``).

    Notifications: none is sent; ``notify`` below is where a sink would be called.
    """
    claimed = claim(result, state_path, command, cooldown_s, now, s3_endpoint_url)
    if not claimed.started:
        return claimed
    notify(result, command)
    code = subprocess.call(command)
    record_run(state_path, {"exit_code": code}, s3_endpoint_url)
    return dataclasses.replace(claimed, exit_code=code)


def claim(result: Result, state_path: str | os.PathLike[str], command: list[str],
          cooldown_s: float, now: float | None = None,
          s3_endpoint_url: str | None = None) -> Trigger:
    """Decides whether ``result`` starts a CT run (``trigger``'s episode and cool-down rules)
    and writes the state before anyone starts it; ``started`` says that the caller must now
    start the run (``command`` is what the state records of it: a command line, or the
    pipeline run to submit). Used as is by the monitoring pipeline, whose next task submits
    the run on KFP."""
    now = time.time() if now is None else now
    state_uri = str(state_path)
    text = store.read_text(state_uri, s3_endpoint_url)
    state = json.loads(text) if text else {}
    episode = state.get("episode")
    if episode and episode.get("version") != result.version:
        episode = None  # a new serving version: its own reference, its own episodes
    if not result.drifted:
        if result.enough:
            episode = None
        state["episode"] = episode
        store.write_text(state_uri, json.dumps(state, indent=2), s3_endpoint_url)
        return Trigger(False, "no drift" if result.enough else "no decision: too few rows")
    if episode:
        return Trigger(False, f"drift episode of version {result.version} since "
                       f"{_when(episode['started'])} already started a run")
    last = state.get("last_run")
    if last and now - last["time"] < cooldown_s:
        return Trigger(False, f"cool-down: the last run started {now - last['time']:.0f} s ago "
                       f"(< {cooldown_s:g} s)")
    state["episode"] = {"started": now, "version": result.version, "features": result.features}
    state["last_run"] = {"time": now, "command": command, "exit_code": None}
    store.write_text(state_uri, json.dumps(state, indent=2), s3_endpoint_url)
    return Trigger(True, f"drift in {', '.join(result.features)}: started a CT run", command)


def record_run(state_path: str | os.PathLike[str], outcome: dict[str, Any],
               s3_endpoint_url: str | None = None) -> None:
    """Adds what became of the claimed run (an exit code, a KFP run id) to the state."""
    text = store.read_text(str(state_path), s3_endpoint_url)
    state = json.loads(text) if text else {}
    state.setdefault("last_run", {}).update(outcome)
    store.write_text(str(state_path), json.dumps(state, indent=2), s3_endpoint_url)


def notify(result: Result, command: list[str]) -> None:
    """The extension point for notifications of a triggered run (chat, e-mail, an alert
    manager): ctloop has no notification sink yet, so nothing is sent. The Prometheus metrics
    (``ctloop_monitor_drift``) are what an alerting rule reads meanwhile."""


def ctloop_command(command: str, args: list[str]) -> list[str]:
    """``ctloop <command> <args>`` with this interpreter: ``run`` (a local CT run with the
    user's flags) or ``submit`` (a KFP run on a cluster, through the same upload/submit code)."""
    if command not in ("run", "submit"):
        raise ConfigError(f"trigger {command!r} is not a ctloop command that starts a CT run; "
                          "use run (local) or submit (a KFP cluster)")
    return [sys.executable, "-m", "ctloop.cli", command, *args]


def _when(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")
