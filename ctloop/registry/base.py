"""What every model registry is: the ``Registry`` protocol, its files' names, a ``Version``, and
the pointer operations (serving, canary) both implementations share, so they cannot drift apart.

A registry holds the numbered versions of one model under ``<root>/<model_name>/``::

    versions/<n>/model/        the SavedModel of version n
    versions/<n>/schema.pbtxt  the TFDV schema the model was trained and validated with
    versions/<n>/record.json   the run record (data fingerprint, parameters, metrics, ...)
    SERVING                    JSON {"version": n}: the model that serves, and the baseline the
                               next run's evaluation compares against
    CANARY                     JSON {"version": m, "percent": p, "over": n, "started_unix": t}
                               while a canary takes p% of a running server's requests, started
                               over serving version n; removed on promote or roll back
    statistics/span-<s>.stats.tfrecord
                               TFDV statistics of span s's train split; the next span's drift is
                               measured against them
    .lock                      held by the run that writes

``ctloop.registry.local`` keeps it in a folder, ``ctloop.registry.s3`` in an S3 bucket; each
says how it makes a version appear whole or not at all and how its lock works.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ctloop.errors import ConfigError, RegistryError, StaleBaselineError

MODEL_DIR = "model"
SCHEMA_FILE = "schema.pbtxt"
RECORD_FILE = "record.json"
POINTER_FILE = "SERVING"
CANARY_FILE = "CANARY"
LOCK_FILE = ".lock"
STATS_SUFFIX = ".stats.tfrecord"
STATS_RE = re.compile(r"^span-(\d+)" + re.escape(STATS_SUFFIX) + "$")
# A canary older than this was left by a killed run: the next canary replaces it. Longer than
# any canary phase (its probe deadline plus its requests).
CANARY_STALE_S = 900.0

# Model names become directory names here and Kubernetes names on clusters: DNS-1123 labels.
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class Version:
    """One complete version in a registry.

    ``path`` is where its files are on this machine: in the registry itself for a folder, in a
    local copy for S3, where ``fetch`` (``fetch(number, name)``) copies each file or folder the
    first time it is asked for, so reading the schema does not download the model.
    """

    number: int
    path: Path
    fetch: Callable[[int, str], None] | None = dataclasses.field(
        default=None, compare=False, repr=False)

    @property
    def model_dir(self) -> Path:
        return self._local(MODEL_DIR)

    @property
    def schema_path(self) -> Path:
        return self._local(SCHEMA_FILE)

    def record(self) -> dict[str, Any]:
        """The run record stored with this version ({} when none was stored)."""
        path = self._local(RECORD_FILE)
        return json.loads(path.read_text()) if path.exists() else {}

    def _local(self, name: str) -> Path:
        if self.fetch is not None:
            self.fetch(self.number, name)
        return self.path / name


def validate_model_name(name: str) -> str:
    """Returns ``name`` if it is a DNS-1123 label, else raises ConfigError."""
    if not _NAME_RE.match(name or ""):
        raise ConfigError(
            f"model name {name!r} is invalid: use 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit (e.g. 'churn-model')"
        )
    return name


class _AnyServing:
    """``set_serving``'s default: move the pointer whatever version serves now."""

    def __repr__(self) -> str:
        return "ANY_SERVING"


ANY_SERVING = _AnyServing()


def stale_baseline(where: object, serving: int | None,
                   expected_serving: int | None) -> StaleBaselineError | None:
    """Why a model evaluated against serving version ``expected_serving`` may not be served by
    the registry at ``where``, which serves ``serving`` now (another run moved its pointer); None
    if it may."""
    if serving == expected_serving:
        return None
    return StaleBaselineError(
        f"registry {where} now serves version {serving}, not version {expected_serving} the "
        "model was evaluated against; rerun to evaluate against the new serving model")


@runtime_checkable
class Lease(Protocol):
    """A held registry lock (what ``Registry.lock`` yields)."""

    def check(self, before: str) -> None:
        """Raises RegistryError unless the lock is surely still held; ``before`` names the
        write about to happen, for the message."""


@runtime_checkable
class Registry(Protocol):
    """The versions of one model, as every task of every run sees them.

    ``open_registry(uri, model_name)`` opens one: ``LocalRegistry`` for a folder,
    ``S3Registry`` for ``s3://``. Writes that must not interleave (push, moving a pointer) run
    under ``lock`` and check, under it, that the serving version is still the one the caller's
    model was judged against (``expected_serving``), else raise StaleBaselineError.
    """

    model_name: str

    @property
    def uri(self) -> str:
        """Where the registry is, for messages."""

    def versions(self) -> list[Version]:
        """Complete versions, oldest first."""

    def serving(self) -> Version | None:
        """The version the serving pointer names; None before the first push. RegistryError if
        the pointer is unreadable or names no complete version."""

    def canary(self) -> tuple[Version, int] | None:
        """The canary version and its share of requests in percent, or None."""

    def lock(self, timeout_s: float = 60.0) -> contextlib.AbstractContextManager[Lease]:
        """Holds the registry's write lock; RegistryError if another run keeps it longer."""

    def push(self, model_dir: str | os.PathLike[str], schema_path: str | os.PathLike[str],
             record: dict[str, Any], *, expected_serving: int | None, serve: bool = True,
             lock_timeout_s: float = 60.0) -> Version:
        """Adds the next numbered version, whole or not at all; with ``serve``, points serving
        at it in the same lock."""

    def set_serving(self, number: int, *, expected_serving: Any = ANY_SERVING,
                    lock_timeout_s: float = 60.0) -> Version:
        """Moves the serving pointer to an existing version (promote or roll back)."""

    def start_canary(self, number: int, percent: int, *, expected_serving: int | None,
                     lock_timeout_s: float = 60.0) -> None:
        """Sends ``percent`` % of a following server's requests to version ``number``."""

    def end_canary(self, *, promote: bool, number: int | None = None,
                   lock_timeout_s: float = 60.0) -> Version | None:
        """Ends the canary: promoted (the serving pointer moves to it) or rolled back."""

    def save_statistics(self, span: int, stats_file: str | os.PathLike[str]) -> str | Path:
        """Stores a span's train statistics (replacing a rerun's); where they went."""

    def previous_statistics(self, span: int) -> tuple[int, Path] | None:
        """The stored statistics of the latest span before ``span``, as (span, local file)."""


@dataclasses.dataclass(frozen=True)
class CanaryPointer:
    """What the CANARY pointer says."""

    version: int
    percent: int
    over: int | None
    checked: bool  # says what it started over (pointers written before canaries did: not)
    started_unix: float


class Pointers:
    """The serving and canary pointers' operations, written once for both implementations on
    what each provides: ``uri``, ``lock`` (yielding a ``Lease``), ``versions``, ``_version(n)``
    (a ``Version``, unchecked), ``_missing(n)`` (why n is not a complete version, or None),
    ``_where(name)`` (a file's place, for messages), ``_read_bytes(name)`` (None if absent),
    ``_write_json(name, data)`` (visible whole or not at all) and ``_remove(name)``."""

    def serving(self) -> Version | None:
        """The version the serving pointer names, or None before the first push.

        Raises:
            RegistryError: The pointer is unreadable or names no complete version.
        """
        number = self._serving_number()
        if number is None:
            return None
        why = self._missing(number)
        if why:
            raise RegistryError(
                f"registry pointer {self._where(POINTER_FILE)} names version {number}, which "
                f"{why}; point it at a complete version")
        return self._version(number)

    def canary(self) -> tuple[Version, int] | None:
        """The canary version and its share of requests in percent, or None."""
        running = self._canary()
        return None if running is None else (self._version(running.version), running.percent)

    def set_serving(self, number: int, *, expected_serving: Any = ANY_SERVING,
                    lock_timeout_s: float = 60.0) -> Version:
        """Moves the serving pointer to an existing version (promote or roll back).

        ``expected_serving``: move it only over this version (None: only while none serves),
        checked under the lock, so a promotion never lands on another run's promotion that came
        first; ``ANY_SERVING`` (the default, for an operator's own switch): whatever serves.
        A canary of that same version (left by a run killed while promoting it) ends with it.

        Raises:
            StaleBaselineError: Another version than ``expected_serving`` serves now.
        """
        with self.lock(lock_timeout_s) as lease:
            version = self._existing(number)
            if expected_serving is not ANY_SERVING:
                self._check_baseline(expected_serving)
            lease.check(f"pointing serving at version {number}")
            self._write_pointer(number)
            running = self._canary()
            if running and running.version == number:
                lease.check(f"ending the canary of version {number}")
                self._remove(CANARY_FILE)
            return version

    def start_canary(self, number: int, percent: int, *, expected_serving: int | None,
                     lock_timeout_s: float = 60.0) -> None:
        """Sends ``percent`` % of a running server's requests to version ``number``.

        ``expected_serving``: the serving version the canary's model was evaluated against. The
        canary starts only over that version, and is promoted only if it still serves then.

        Raises:
            StaleBaselineError: Another version serves now: the evaluation no longer holds.
            RegistryError: Another version's canary started less than ``CANARY_STALE_S`` ago:
                another run's rollout is under way. An older one was left by a killed run and
                is replaced.
        """
        if not 1 <= percent <= 100:
            raise ConfigError(f"canary percent {percent} is out of range: use 1..100")
        with self.lock(lock_timeout_s) as lease:
            self._existing(number)
            self._check_baseline(expected_serving)
            running = self._canary()
            if running and running.version != number:
                age = time.time() - running.started_unix
                if age < CANARY_STALE_S:
                    raise RegistryError(
                        f"registry {self.uri} has a canary of version {running.version} "
                        f"started {age:.0f} s ago by another run; wait for it to end (or, if "
                        f"that run died, {CANARY_STALE_S - age:.0f} s more), then rerun")
            lease.check(f"starting the canary of version {number}")
            self._write_json(CANARY_FILE, {"version": number, "percent": percent,
                                           "over": expected_serving, "started_unix": time.time()})

    def end_canary(self, *, promote: bool, number: int | None = None,
                   lock_timeout_s: float = 60.0) -> Version | None:
        """Ends the canary: promote moves the serving pointer to it; otherwise it is rolled back.

        ``number``: the canary this caller started. If another run's canary replaced it, nothing
        is promoted or removed (that canary is the other run's to end), and RegistryError says so.

        Returns:
            The version that serves afterwards.

        Raises:
            RegistryError: Promoting, but no canary runs: nothing would move.
            StaleBaselineError: Promoting, but another version than the one the canary started
                over serves now (another run moved the pointer): the canary is rolled back.
        """
        with self.lock(lock_timeout_s) as lease:
            running = self._canary()
            if running is None and promote:
                which = "" if number is None else f" of version {number}"
                raise RegistryError(
                    f"registry {self.uri} has no canary{which} to promote (none was started, or "
                    "it has ended), so nothing was promoted; start one with start_canary first, "
                    "or move the serving pointer with set_serving")
            if running is None:
                return self.serving()
            if number is not None and running.version != number:
                raise RegistryError(
                    f"the canary of version {number} in {self.uri} was replaced by version "
                    f"{running.version}'s, another run's; version {number} was not promoted")
            stale = self._stale_baseline(running.over) if running.checked else None
            if promote and stale is None:
                lease.check(f"promoting the canary of version {running.version}")
                self._write_pointer(running.version)
            lease.check(f"ending the canary of version {running.version}")
            self._remove(CANARY_FILE)
            if promote and stale:
                raise stale
            return self.serving()

    # --- shared by the operations and the implementations' push -----------------------------

    def _serving_number(self) -> int | None:
        data = self._pointer(POINTER_FILE)
        return None if data is None else data["version"]

    def _existing(self, number: int) -> Version:
        if self._missing(number):
            raise RegistryError(
                f"version {number} does not exist in {self.uri}; choose one of "
                f"{[v.number for v in self.versions()]}")
        return self._version(number)

    def _stale_baseline(self, expected_serving: int | None) -> StaleBaselineError | None:
        current = self.serving()
        return stale_baseline(self.uri, current.number if current else None, expected_serving)

    def _check_baseline(self, expected_serving: int | None) -> None:
        stale = self._stale_baseline(expected_serving)
        if stale:
            raise stale

    def _write_pointer(self, number: int) -> None:
        self._write_json(POINTER_FILE, {"version": number, "updated_unix": time.time()})

    def _canary(self) -> CanaryPointer | None:
        data = self._pointer(CANARY_FILE)
        if data is None:
            return None
        over = data.get("over")
        return CanaryPointer(data["version"], data["percent"], over, "over" in data,
                             float(data.get("started_unix") or 0))

    def _pointer(self, name: str) -> dict[str, Any] | None:
        """The pointer ``name`` (SERVING or CANARY) with its numbers checked; None if absent.

        Raises:
            RegistryError: It cannot be read, is not JSON, or lacks a number it needs.
        """
        where = self._where(name)
        kind = "registry pointer" if name == POINTER_FILE else "canary pointer"
        fix = ("restore it (point it at a complete version) or delete it to start cold"
               if name == POINTER_FILE else "delete it to end the canary")
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
        needed = ("version",) if name == POINTER_FILE else ("version", "percent")
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


class HeldLock:
    """The lease of a lock that cannot be lost while held (``flock``): ``check`` always
    passes."""

    def check(self, before: str) -> None:
        return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
