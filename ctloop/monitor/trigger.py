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
from pathlib import Path
from typing import Any

from ctloop.errors import ConfigError
from ctloop.monitor.measure import Result
from ctloop.monitor.report import write_atomic


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
            cooldown_s: float, now: float | None = None) -> Trigger:
    """Starts ``command`` (a CT run) when ``result`` decides drift, once per drift episode.

    An episode starts with a drift decision and ends with a no-drift decision on enough rows,
    or when the serving version changes (a new model serves: a new reference). One episode
    starts at most one run, and no run starts within ``cooldown_s`` of the last one, so a
    monitor on a schedule cannot start a run per pass. The state file is written before the
    run starts: a monitor killed during the run does not start another for the same episode.

    Notifications: none is sent; ``notify`` below is where a sink would be called.
    """
    now = time.time() if now is None else now
    path = Path(state_path)
    state = json.loads(path.read_text()) if path.exists() else {}
    episode = state.get("episode")
    if episode and episode.get("version") != result.version:
        episode = None  # a new serving version: its own reference, its own episodes
    if not result.drifted:
        if result.enough:
            episode = None
        state["episode"] = episode
        write_atomic(path, json.dumps(state, indent=2))
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
    write_atomic(path, json.dumps(state, indent=2))
    notify(result, command)
    code = subprocess.call(command)
    state["last_run"]["exit_code"] = code
    write_atomic(path, json.dumps(state, indent=2))
    return Trigger(True, f"drift in {', '.join(result.features)}: started a CT run", command,
                   code)


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
