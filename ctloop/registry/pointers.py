"""The pointer operations of a registry, written once for both implementations (``Pointers``):
per stage (``base.STAGES``) the serving pointer with its history, a canary and a shadow, and
the decisions recorded on a version, each under the registry's lock.

A canary and a shadow are one thing with two kinds (a *trial*): a version tried beside the
one the stage serves, started only over the version it was judged against, and promoted only
if that version still serves when it ends. A canary takes a share of the requests; a shadow
answers a copy of them, unseen.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from ctloop.errors import ConfigError, RegistryError, StaleBaselineError
from ctloop.registry.base import (
    ANY_SERVING,
    CANARY_KIND,
    CANARY_STALE_S,
    HISTORY_LENGTH,
    PRODUCTION,
    RECORD_FILE,
    SERVING_KIND,
    SHADOW_KIND,
    Lease,
    Version,
    _integer,
    check_stage,
    pointer_file,
    stale_baseline,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrialPointer:
    """What a CANARY or SHADOW pointer says (``percent`` None for a shadow)."""

    kind: str
    version: int
    percent: int | None
    over: int | None
    checked: bool  # says what it started over (pointers written before canaries did: not)
    started_unix: float


CanaryPointer = TrialPointer  # its name before shadows


def _label(kind: str, stage: str) -> str:
    """"canary" in production (as before stages), "staging canary" in staging."""
    return kind if stage == PRODUCTION else f"{stage} {kind}"


class Pointers:
    """The pointers' operations on what each implementation provides: ``uri``, ``lock``
    (yielding a ``Lease``), ``versions``, ``_version(n)`` (a ``Version``, unchecked),
    ``_missing(n)`` (why n is not a complete version, or None), ``_where(name)`` (a file's
    place, for messages), ``_read_bytes(name)`` (None if absent), ``_write_bytes(name, body)``
    (visible whole or not at all) and ``_remove(name)``; ``name`` is a path under the model's
    folder (``SERVING``, ``versions/3/record.json``)."""

    # --- reads --------------------------------------------------------------------------------

    def serving(self, stage: str = PRODUCTION) -> Version | None:
        """The version the stage's pointer names, or None before the first push.

        Raises:
            RegistryError: The pointer is unreadable or names no complete version.
            ConfigError: An unknown stage.
        """
        number = self._serving_number(stage)
        if number is None:
            return None
        why = self._missing(number)
        if why:
            raise RegistryError(
                f"registry pointer {self._where(pointer_file(SERVING_KIND, stage))} names "
                f"version {number}, which {why}; point it at a complete version")
        return self._version(number)

    def canary(self, stage: str = PRODUCTION) -> tuple[Version, int] | None:
        """The stage's canary version and its share of requests in percent, or None."""
        running = self._trial(CANARY_KIND, stage)
        return None if running is None else (self._version(running.version), running.percent)

    def shadow(self, stage: str = PRODUCTION) -> Version | None:
        """The stage's shadow version, or None."""
        running = self._trial(SHADOW_KIND, stage)
        return None if running is None else self._version(running.version)

    def history(self, stage: str = PRODUCTION) -> list[int]:
        """The versions the stage's pointer named before the one it names, oldest first (the
        last is what a rollback returns to); [] for a pointer written before history was."""
        data = self._pointer(pointer_file(SERVING_KIND, stage))
        return [] if data is None else _previous(data)

    def read_record(self, number: int) -> dict[str, Any]:
        """Version ``number``'s run record as stored now (not a copy read earlier).

        Raises:
            RegistryError: The version does not exist, or its record is not JSON.
        """
        self._existing(number)
        name = f"versions/{number}/{RECORD_FILE}"
        body = self._read_bytes(name)
        if body is None:
            return {}
        try:
            record = json.loads(body)
        except ValueError as exc:
            raise RegistryError(f"record {self._where(name)} is not JSON ({exc}); restore it "
                                "from the run that pushed the version") from exc
        if not isinstance(record, dict):
            raise RegistryError(f"record {self._where(name)} is not a JSON object; restore it "
                                "from the run that pushed the version")
        return record

    # --- writes, each under the lock -----------------------------------------------------------

    def set_serving(self, number: int, *, expected_serving: Any = ANY_SERVING,
                    stage: str = PRODUCTION, decision: dict[str, Any] | None = None,
                    lock_timeout_s: float = 60.0) -> Version:
        """Moves the stage's pointer to an existing version (promote or roll back); the version
        it named joins the pointer's history.

        ``expected_serving``: move it only over this version (None: only while none serves),
        checked under the lock, so a promotion never lands on another run's promotion that came
        first; ``ANY_SERVING`` (the default, for an operator's own switch): whatever serves.
        A canary or shadow of that same version (left by a run killed while promoting it) ends
        with it. ``decision``: recorded on the version (``record_decision``) in the same lock.

        Raises:
            StaleBaselineError: Another version than ``expected_serving`` serves now.
        """
        check_stage(stage)
        with self.lock(lock_timeout_s) as lease:
            version = self._existing(number)
            if expected_serving is not ANY_SERVING:
                self._check_baseline(expected_serving, stage)
            self.write_pointer(lease, number, stage=stage, decision=decision)
            return version

    def start_canary(self, number: int, percent: int, *, expected_serving: int | None,
                     stage: str = PRODUCTION, lock_timeout_s: float = 60.0) -> None:
        """Sends ``percent`` % of a running server's requests to version ``number``.

        ``expected_serving``: the version the stage served when the canary's model was
        evaluated. The canary starts only over that version, and is promoted only if it still
        serves then.

        Raises:
            StaleBaselineError: Another version serves now: the evaluation no longer holds.
            RegistryError: Another version's canary started less than ``CANARY_STALE_S`` ago:
                another run's rollout is under way. An older one was left by a killed run and
                is replaced.
        """
        if not 1 <= percent <= 100:
            raise ConfigError(f"canary percent {percent} is out of range: use 1..100")
        self._start_trial(CANARY_KIND, number, {"percent": percent}, expected_serving, stage,
                          lock_timeout_s)

    def end_canary(self, *, promote: bool, number: int | None = None, stage: str = PRODUCTION,
                   lock_timeout_s: float = 60.0) -> Version | None:
        """Ends the canary: promote moves the stage's pointer to it; otherwise it is rolled
        back. See ``_end_trial``."""
        return self._end_trial(CANARY_KIND, promote, number, stage, lock_timeout_s)

    def start_shadow(self, number: int, *, expected_serving: int | None,
                     stage: str = PRODUCTION, lock_timeout_s: float = 60.0) -> None:
        """Has version ``number`` answer a copy of the stage's requests, unseen; the same rules
        as ``start_canary`` (over ``expected_serving`` only; another run's shadow younger than
        ``CANARY_STALE_S`` is left alone, an older one replaced)."""
        self._start_trial(SHADOW_KIND, number, {}, expected_serving, stage, lock_timeout_s)

    def end_shadow(self, *, promote: bool, number: int | None = None, stage: str = PRODUCTION,
                   lock_timeout_s: float = 60.0) -> Version | None:
        """Ends the shadow: promote moves the stage's pointer to it (only if the stage still
        serves the version it started over); the shadow pointer is removed either way. See
        ``_end_trial``."""
        return self._end_trial(SHADOW_KIND, promote, number, stage, lock_timeout_s)

    def record_decision(self, number: int, decision: dict[str, Any], *,
                        lock_timeout_s: float = 60.0) -> None:
        """Appends ``decision`` (with ``at_unix``) to version ``number``'s record under
        ``"decisions"``: one write of the whole record, under the lock."""
        with self.lock(lock_timeout_s) as lease:
            self.write_decision(lease, number, decision)

    # --- for callers holding the lock (push, set_serving, ctloop.registry.stages) --------------

    def write_pointer(self, lease: Lease, number: int, *, stage: str = PRODUCTION,
                      previous: list[int] | None = None,
                      decision: dict[str, Any] | None = None) -> None:
        """Points the stage at version ``number``; the caller holds ``lock()`` (``lease``).

        ``previous``: the pointer's history as written (a rollback's, popped); None: the
        history so far plus the version it names now. ``decision``: recorded on the version
        first: a decision recorded by a writer killed before the pointer moved says what was
        meant, a pointer moved with no decision would not say who moved it.
        """
        if decision is not None:
            self.write_decision(lease, number, decision)
        lease.check(f"pointing {stage} at version {number}")
        self._write_pointer(number, stage, previous)
        for kind in (CANARY_KIND, SHADOW_KIND):
            running = self._trial(kind, stage)
            if running and running.version == number:
                lease.check(f"ending the {_label(kind, stage)} of version {number}")
                self._remove(pointer_file(kind, stage))

    def write_decision(self, lease: Lease, number: int, decision: dict[str, Any]) -> None:
        """Appends ``decision`` to the version's record; the caller holds ``lock()``."""
        record = self.read_record(number)
        decisions = record.get("decisions")
        decisions = list(decisions) if isinstance(decisions, list) else []
        decisions.append({**decision, "at_unix": decision.get("at_unix",
                                                              round(time.time(), 3))})
        lease.check(f"recording a decision on version {number}")
        self._write_bytes(f"versions/{number}/{RECORD_FILE}", json.dumps(
            {**record, "decisions": decisions}, indent=2, sort_keys=True).encode())

    # --- the trials: canary and shadow ---------------------------------------------------------

    def _start_trial(self, kind: str, number: int, extra: dict[str, Any],
                     expected_serving: int | None, stage: str, lock_timeout_s: float) -> None:
        name, label = pointer_file(kind, stage), _label(kind, stage)
        with self.lock(lock_timeout_s) as lease:
            self._existing(number)
            self._check_baseline(expected_serving, stage)
            running = self._trial(kind, stage)
            if running and running.version != number:
                age = time.time() - running.started_unix
                if age < CANARY_STALE_S:
                    raise RegistryError(
                        f"registry {self.uri} has a {label} of version {running.version} "
                        f"started {age:.0f} s ago by another run; wait for it to end (or, if "
                        f"that run died, {CANARY_STALE_S - age:.0f} s more), then rerun")
            lease.check(f"starting the {label} of version {number}")
            self._write_json(name, {"version": number, **extra, "over": expected_serving,
                                    "started_unix": time.time()})

    def _end_trial(self, kind: str, promote: bool, number: int | None, stage: str,
                   lock_timeout_s: float) -> Version | None:
        """Ends the stage's canary or shadow: promote moves the stage's pointer to it;
        otherwise it is rolled back.

        ``number``: the trial this caller started. If another run's trial replaced it, nothing
        is promoted or removed (that trial is the other run's to end), and RegistryError says so.

        Returns:
            The version the stage serves afterwards.

        Raises:
            RegistryError: Promoting, but no trial runs: nothing would move.
            StaleBaselineError: Promoting, but another version than the one the trial started
                over serves now (another run moved the pointer): the trial is rolled back.
        """
        name, label = pointer_file(kind, stage), _label(kind, stage)
        with self.lock(lock_timeout_s) as lease:
            running = self._trial(kind, stage)
            if running is None and promote:
                which = "" if number is None else f" of version {number}"
                raise RegistryError(
                    f"registry {self.uri} has no {label}{which} to promote (none was started, "
                    f"or it has ended), so nothing was promoted; start one with start_{kind} "
                    "first, or move the serving pointer with set_serving")
            if running is None:
                return self.serving(stage)
            if number is not None and running.version != number:
                raise RegistryError(
                    f"the {label} of version {number} in {self.uri} was replaced by version "
                    f"{running.version}'s, another run's; version {number} was not promoted")
            stale = (self._stale_baseline(running.over, stage) if running.checked else None)
            if promote and stale is None:
                lease.check(f"promoting the {label} of version {running.version}")
                self._write_pointer(running.version, stage)
            lease.check(f"ending the {label} of version {running.version}")
            self._remove(name)
            if promote and stale:
                raise stale
            return self.serving(stage)

    def _trial(self, kind: str, stage: str) -> TrialPointer | None:
        data = self._pointer(pointer_file(kind, stage))
        if data is None:
            return None
        return TrialPointer(kind, data["version"], data.get("percent"), data.get("over"),
                            "over" in data, float(data.get("started_unix") or 0))

    def _canary(self) -> TrialPointer | None:
        return self._trial(CANARY_KIND, PRODUCTION)

    # --- shared by the operations and the implementations' push -----------------------------

    def _serving_number(self, stage: str = PRODUCTION) -> int | None:
        data = self._pointer(pointer_file(SERVING_KIND, stage))
        return None if data is None else data["version"]

    def _existing(self, number: int) -> Version:
        if self._missing(number):
            raise RegistryError(
                f"version {number} does not exist in {self.uri}; choose one of "
                f"{[v.number for v in self.versions()]}")
        return self._version(number)

    def _stale_baseline(self, expected_serving: int | None,
                        stage: str = PRODUCTION) -> StaleBaselineError | None:
        current = self.serving(stage)
        where = self.uri if stage == PRODUCTION else f"{self.uri} ({stage})"
        return stale_baseline(where, current.number if current else None, expected_serving)

    def _check_baseline(self, expected_serving: int | None, stage: str = PRODUCTION) -> None:
        stale = self._stale_baseline(expected_serving, stage)
        if stale:
            raise stale

    def _write_pointer(self, number: int, stage: str = PRODUCTION,
                       previous: list[int] | None = None) -> None:
        name = pointer_file(SERVING_KIND, stage)
        if previous is None:
            try:
                data = self._pointer(name)
            except RegistryError as exc:  # moving it is how an operator repairs it
                log.warning("%s; its history starts again", exc)
                data = None
            previous = [] if data is None else _previous(data)
            if data is not None and data["version"] != number:
                previous.append(data["version"])
        self._write_json(name, {"version": number, "updated_unix": time.time(),
                                "previous": previous[-HISTORY_LENGTH:]})

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        self._write_bytes(name, json.dumps(data).encode())

    def _pointer(self, name: str) -> dict[str, Any] | None:
        """The pointer ``name`` (a serving, canary or shadow pointer) with its numbers checked;
        None if absent.

        Raises:
            RegistryError: It cannot be read, is not JSON, or lacks a number it needs.
        """
        where = self._where(name)
        kind = ("shadow" if name.endswith("SHADOW") else "canary" if name.endswith("CANARY")
                else "registry")
        fix = {"registry": "restore it (point it at a complete version) or delete it to start "
                           "cold",
               "canary": "delete it to end the canary",
               "shadow": "delete it to end the shadow"}[kind]
        kind = f"{kind} pointer"
        try:
            body = self._read_bytes(name)
        except OSError as exc:
            raise RegistryError(f"{kind} {where} is unreadable ({exc}); {fix}") from exc
        if body is None:
            return None
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise RegistryError(f"{kind} {where} is unreadable ({exc}); {fix}") from exc
        needed = ("version", "percent") if kind == "canary pointer" else ("version",)
        for key in needed:
            value = _integer(data.get(key) if isinstance(data, dict) else None)
            if value is None:
                shown = json.dumps(data)
                shown = shown if len(shown) <= 80 else shown[:77] + "..."
                raise RegistryError(
                    f"{kind} {where} names no {key} (it holds {shown}; it needs "
                    f'{{"{key}": <number>}}); {fix}')
            data[key] = value
        return data


def _previous(data: dict[str, Any]) -> list[int]:
    """A pointer's history; entries that are not version numbers are left out."""
    found = data.get("previous")
    if not isinstance(found, list):
        return []
    return [n for n in map(_integer, found) if n is not None]
