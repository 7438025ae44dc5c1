"""What every model registry is: the ``Registry`` protocol, its files' names, its stages and a
``Version``; the pointer operations both implementations share are ``ctloop.registry.pointers``'.

A registry holds the numbered versions of one model under ``<root>/<model_name>/``::

    versions/<n>/model/        the SavedModel of version n
    versions/<n>/schema.pbtxt  the TFDV schema the model was trained and validated with
    versions/<n>/record.json   the run record (data fingerprint, parameters, metrics, ...), and
                               under "decisions" who moved it between stages, when and why
    SERVING                    JSON {"version": n, "updated_unix": t, "previous": [...]}: the
                               model production serves, and the baseline the next run's
                               evaluation compares against; "previous" the versions it named
                               before, newest last (what a rollback returns to)
    STAGING                    the same for the staging stage: the version a person approves
                               (``ctloop promote``) before production serves it
    CANARY                     JSON {"version": m, "percent": p, "over": n, "started_unix": t}
                               while a canary takes p% of a running server's requests, started
                               over serving version n; removed on promote or roll back
    SHADOW                     JSON {"version": m, "over": n, "started_unix": t} while version m
                               answers a copy of the requests, unseen, started over version n
    STAGING.CANARY, STAGING.SHADOW
                               the canary and shadow of the staging stage
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
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ctloop.errors import ConfigError, StaleBaselineError

MODEL_DIR = "model"
SCHEMA_FILE = "schema.pbtxt"
RECORD_FILE = "record.json"
POINTER_FILE = "SERVING"
CANARY_FILE = "CANARY"
SHADOW_FILE = "SHADOW"
STAGING_FILE = "STAGING"
LOCK_FILE = ".lock"
STATS_SUFFIX = ".stats.tfrecord"
STATS_RE = re.compile(r"^span-(\d+)" + re.escape(STATS_SUFFIX) + "$")
# The stages a version moves through: a CT run puts it in staging (or, without stages, straight
# into production), a person promotes it to production. Production's pointer is SERVING, as it
# was before stages, so registries and callers that know no stages keep working.
STAGING, PRODUCTION = "staging", "production"
STAGES = (STAGING, PRODUCTION)
# The pointers of a stage: what it serves, its canary, its shadow.
SERVING_KIND, CANARY_KIND, SHADOW_KIND = "serving", "canary", "shadow"
_FILES = {(SERVING_KIND, PRODUCTION): POINTER_FILE, (SERVING_KIND, STAGING): STAGING_FILE,
          (CANARY_KIND, PRODUCTION): CANARY_FILE, (CANARY_KIND, STAGING): "STAGING.CANARY",
          (SHADOW_KIND, PRODUCTION): SHADOW_FILE, (SHADOW_KIND, STAGING): "STAGING.SHADOW"}
POINTER_FILES = tuple(_FILES.values())
# How many versions a pointer remembers having named (what rollbacks can return to).
HISTORY_LENGTH = 50
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


def check_stage(stage: str) -> str:
    """Returns ``stage`` if it is one of ``STAGES``, else raises ConfigError."""
    if stage not in STAGES:
        raise ConfigError(f"stage {stage!r} is unknown: use one of {', '.join(STAGES)}")
    return stage


def pointer_file(kind: str, stage: str = PRODUCTION) -> str:
    """The file of a stage's pointer: ``kind`` is "serving", "canary" or "shadow".

    Raises:
        ConfigError: An unknown stage or kind.
    """
    check_stage(stage)
    if (kind, stage) not in _FILES:
        raise ConfigError(f"pointer kind {kind!r} is unknown: use serving, canary or shadow")
    return _FILES[kind, stage]


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

    def serving(self, stage: str = PRODUCTION) -> Version | None:
        """The version the stage's pointer names; None before the first push. RegistryError if
        the pointer is unreadable or names no complete version."""

    def canary(self, stage: str = PRODUCTION) -> tuple[Version, int] | None:
        """The stage's canary version and its share of requests in percent, or None."""

    def shadow(self, stage: str = PRODUCTION) -> Version | None:
        """The stage's shadow version (answering a copy of the requests, unseen), or None."""

    def history(self, stage: str = PRODUCTION) -> list[int]:
        """The versions the stage's pointer named before, oldest first."""

    def lock(self, timeout_s: float = 60.0) -> contextlib.AbstractContextManager[Lease]:
        """Holds the registry's write lock; RegistryError if another run keeps it longer."""

    def push(self, model_dir: str | os.PathLike[str], schema_path: str | os.PathLike[str],
             record: dict[str, Any], *, expected_serving: int | None, serve: bool = True,
             stage: str = PRODUCTION, lock_timeout_s: float = 60.0) -> Version:
        """Adds the next numbered version, whole or not at all; with ``serve``, points the
        stage's pointer at it in the same lock."""

    def set_serving(self, number: int, *, expected_serving: Any = ANY_SERVING,
                    stage: str = PRODUCTION, decision: dict[str, Any] | None = None,
                    lock_timeout_s: float = 60.0) -> Version:
        """Moves the stage's pointer to an existing version (promote or roll back)."""

    def start_canary(self, number: int, percent: int, *, expected_serving: int | None,
                     stage: str = PRODUCTION, lock_timeout_s: float = 60.0) -> None:
        """Sends ``percent`` % of a following server's requests to version ``number``."""

    def end_canary(self, *, promote: bool, number: int | None = None, stage: str = PRODUCTION,
                   lock_timeout_s: float = 60.0) -> Version | None:
        """Ends the canary: promoted (the stage's pointer moves to it) or rolled back."""

    def start_shadow(self, number: int, *, expected_serving: int | None,
                     stage: str = PRODUCTION, lock_timeout_s: float = 60.0) -> None:
        """Has version ``number`` answer a copy of the stage's requests, unseen."""

    def end_shadow(self, *, promote: bool, number: int | None = None, stage: str = PRODUCTION,
                   lock_timeout_s: float = 60.0) -> Version | None:
        """Ends the shadow: promoted (the stage's pointer moves to it) or dropped."""

    def record_decision(self, number: int, decision: dict[str, Any], *,
                        lock_timeout_s: float = 60.0) -> None:
        """Appends ``decision`` to version ``number``'s record, whole or not at all."""

    def read_record(self, number: int) -> dict[str, Any]:
        """Version ``number``'s run record as stored now."""

    def write_pointer(self, lease: Lease, number: int, *, stage: str = PRODUCTION,
                      previous: list[int] | None = None,
                      decision: dict[str, Any] | None = None) -> None:
        """``set_serving``'s write, for a caller that holds ``lock()`` (``lease``)."""

    def write_decision(self, lease: Lease, number: int, decision: dict[str, Any]) -> None:
        """``record_decision``'s write, for a caller that holds ``lock()`` (``lease``)."""

    def save_statistics(self, span: int, stats_file: str | os.PathLike[str]) -> str | Path:
        """Stores a span's train statistics (replacing a rerun's); where they went."""

    def previous_statistics(self, span: int) -> tuple[int, Path] | None:
        """The stored statistics of the latest span before ``span``, as (span, local file)."""


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
