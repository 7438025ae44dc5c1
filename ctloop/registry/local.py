"""A local model registry: numbered versions plus an atomically moved "serving" pointer.

Layout under ``<root>/<model_name>/``::

    versions/<n>/model/        the SavedModel of version n
    versions/<n>/schema.pbtxt  the TFDV schema the model was trained and validated with
    versions/<n>/record.json   the run record (data fingerprint, parameters, metrics, ...)
    versions/.staging-*/       pushes in progress; never visible as a version
    SERVING                    JSON pointer {"version": n}; the model that serves, and the
                               baseline the next run's evaluation compares against
    CANARY                     JSON {"version": m, "percent": p, "started_unix": t} while a
                               canary takes p% of a running server's requests; removed on
                               promote or roll back
    statistics/span-<s>.stats.tfrecord
                               TFDV statistics of span s's train split, written by every run's
                               data validation; the next span's drift is measured against them
    .lock                      held (flock) by the run that pushes

A version directory appears only by ``rename`` of a complete, fsynced staging directory, and
the pointer only by ``rename`` of a complete, fsynced file, so a reader never sees a half-written
version or pointer, whatever point a writer is killed at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctloop.errors import ConfigError, RegistryError, StaleBaselineError

MODEL_DIR = "model"
SCHEMA_FILE = "schema.pbtxt"
RECORD_FILE = "record.json"
POINTER_FILE = "SERVING"
CANARY_FILE = "CANARY"
LOCK_FILE = ".lock"
STAGING_PREFIX = ".staging-"
# A canary older than this was left by a killed run: the next canary replaces it. Longer than
# any canary phase (its probe deadline plus its requests).
CANARY_STALE_S = 900.0

STATS_SUFFIX = ".stats.tfrecord"
_STATS_RE = re.compile(r"^span-(\d+)" + re.escape(STATS_SUFFIX) + "$")

# Model names become directory names here and Kubernetes names on clusters: DNS-1123 labels.
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class Version:
    """One complete version in the registry."""

    number: int
    path: Path

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def schema_path(self) -> Path:
        return self.path / SCHEMA_FILE

    def record(self) -> dict[str, Any]:
        """The run record stored with this version ({} when none was stored)."""
        path = self.path / RECORD_FILE
        return json.loads(path.read_text()) if path.exists() else {}


def validate_model_name(name: str) -> str:
    """Returns ``name`` if it is a DNS-1123 label, else raises ConfigError."""
    if not _NAME_RE.match(name or ""):
        raise ConfigError(
            f"model name {name!r} is invalid: use 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit (e.g. 'churn-model')"
        )
    return name


def open_registry(uri: str, model_name: str, s3_endpoint_url: str | None = None):
    """The registry at ``uri``: a local folder (``Registry``), or ``s3://BUCKET[/PREFIX]``
    (``S3Registry``, shared by the pods of a cluster; ``s3_endpoint_url`` for MinIO/SeaweedFS).

    Raises:
        ConfigError: Another scheme.
    """
    if uri.startswith("s3://"):
        from ctloop.registry.s3 import S3Registry

        return S3Registry(uri, model_name, s3_endpoint_url)
    if "://" in uri:
        raise ConfigError(f"registry URI {uri!r} is not supported: use a local folder or "
                          "s3://BUCKET/PREFIX (AWS S3, MinIO and SeaweedFS speak it)")
    return Registry(uri, model_name)


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


class Registry:
    """The versions of one model under a local registry root."""

    def __init__(self, root: str | os.PathLike[str], model_name: str):
        self.model_name = validate_model_name(model_name)
        self.root = Path(root)
        self.path = self.root / model_name
        self._versions = self.path / "versions"

    @property
    def uri(self) -> str:
        """Where the registry is, for messages (as ``S3Registry.uri``)."""
        return str(self.path)

    def versions(self) -> list[Version]:
        """Complete versions, oldest first."""
        if not self._versions.is_dir():
            return []
        numbers = sorted(int(p.name) for p in self._versions.iterdir() if p.name.isdigit())
        return [Version(n, self._versions / str(n)) for n in numbers]

    def serving(self) -> Version | None:
        """The version the serving pointer names, or None before the first push."""
        pointer = self.path / POINTER_FILE
        try:
            data = json.loads(pointer.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"registry pointer {pointer} is unreadable ({exc}); restore it from a version "
                f"under {self._versions} or delete it to start cold"
            ) from exc
        version = Version(int(data["version"]), self._versions / str(data["version"]))
        if not version.model_dir.is_dir():
            raise RegistryError(
                f"registry pointer {pointer} names version {version.number}, which has no model "
                f"at {version.model_dir}; point it at a complete version"
            )
        return version

    @contextlib.contextmanager
    def lock(self, timeout_s: float = 60.0) -> Iterator[None]:
        """Holds the registry's push lock; raises RegistryError if another run keeps it."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK_FILE, "a+") as handle:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise RegistryError(
                            f"registry {self.path} is locked by another run for over "
                            f"{timeout_s:.0f}s; wait for that run to finish, then rerun"
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def push(
        self,
        model_dir: str | os.PathLike[str],
        schema_path: str | os.PathLike[str],
        record: dict[str, Any],
        *,
        expected_serving: int | None,
        serve: bool = True,
        lock_timeout_s: float = 60.0,
    ) -> Version:
        """Adds a new numbered version atomically and (by default) points serving at it.

        Args:
            model_dir: The SavedModel directory to copy in.
            schema_path: The schema file the model was validated with.
            record: The run record stored as record.json.
            expected_serving: The serving version the model was judged against (None: none
                served). Checked under the lock, so a model blessed against version n is never
                pushed over a version another run pushed meanwhile.
            serve: Move the serving pointer to the new version.
            lock_timeout_s: How long to wait for a concurrent push to finish.

        Returns:
            The new version.
        """
        with self.lock(lock_timeout_s):
            self._check_baseline(expected_serving)
            self._versions.mkdir(parents=True, exist_ok=True)
            self._remove_stale_staging()
            number = max((v.number for v in self.versions()), default=0) + 1
            staging = self._versions / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
            shutil.copytree(model_dir, staging / MODEL_DIR)
            shutil.copyfile(schema_path, staging / SCHEMA_FILE)
            (staging / RECORD_FILE).write_text(
                json.dumps({**record, "version": number}, indent=2, sort_keys=True)
            )
            _fsync_tree(staging)
            final = self._versions / str(number)
            os.rename(staging, final)
            _fsync_dir(self._versions)
            version = Version(number, final)
            if serve:
                self._write_pointer(number)
            return version

    def set_serving(self, number: int, *, expected_serving: int | None | _AnyServing = ANY_SERVING,
                    lock_timeout_s: float = 60.0) -> Version:
        """Moves the serving pointer to an existing version (promote or roll back).

        ``expected_serving``: move it only over this version (None: only while none serves),
        checked under the lock, so a promotion never lands on another run's promotion that came
        first; ``ANY_SERVING`` (the default, for an operator's own switch): whatever serves.
        A canary of that same version (left by a run killed while promoting it) ends with it.

        Raises:
            StaleBaselineError: Another version than ``expected_serving`` serves now.
        """
        with self.lock(lock_timeout_s):
            version = self._existing(number)
            if expected_serving is not ANY_SERVING:
                self._check_baseline(expected_serving)
            self._write_pointer(number)
            running = self._canary_data()
            if running and int(running["version"]) == number:
                (self.path / CANARY_FILE).unlink()
                _fsync_dir(self.path)
            return version

    def save_statistics(self, span: int, stats_file: str | os.PathLike[str]) -> Path:
        """Stores a span's train statistics (replacing a rerun's) by atomic rename."""
        folder = self.path / "statistics"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"span-{span}{STATS_SUFFIX}"
        tmp = folder / f".{final.name}.{uuid.uuid4().hex}"
        shutil.copyfile(stats_file, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _fsync_dir(folder)
        return final

    def previous_statistics(self, span: int) -> tuple[int, Path] | None:
        """The stored statistics of the latest span before ``span``, as (span, file)."""
        folder = self.path / "statistics"
        stored = [
            (int(m.group(1)), p)
            for p in (folder.iterdir() if folder.is_dir() else [])
            if (m := _STATS_RE.match(p.name)) and int(m.group(1)) < span
        ]
        return max(stored) if stored else None

    def canary(self) -> tuple[Version, int] | None:
        """The canary version and its share of requests in percent, or None."""
        data = self._canary_data()
        if data is None:
            return None
        return Version(int(data["version"]), self._versions / str(data["version"])), int(
            data["percent"])

    def _canary_data(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / CANARY_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"canary pointer {self.path / CANARY_FILE} is unreadable ({exc}); delete it to "
                "end the canary"
            ) from exc

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
        with self.lock(lock_timeout_s):
            self._existing(number)
            self._check_baseline(expected_serving)
            running = self._canary_data()
            if running and int(running["version"]) != number:
                age = time.time() - float(running.get("started_unix", 0))
                if age < CANARY_STALE_S:
                    raise RegistryError(
                        f"registry {self.path} has a canary of version {running['version']} "
                        f"started {age:.0f} s ago by another run; wait for it to end (or, if "
                        f"that run died, {CANARY_STALE_S - age:.0f} s more), then rerun")
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
            StaleBaselineError: Promoting, but another version than the one the canary started
                over serves now (another run moved the pointer): the canary is rolled back.
        """
        with self.lock(lock_timeout_s):
            data = self._canary_data()
            current = self.canary()
            if number is not None and current and current[0].number != number:
                raise RegistryError(
                    f"the canary of version {number} in {self.path} was replaced by version "
                    f"{current[0].number}'s, another run's; version {number} was not promoted")
            # A canary pointer written before canaries recorded what they started over: unchecked.
            stale = self._stale_baseline(data["over"]) if current and "over" in data else None
            if promote and current and stale is None:
                self._write_pointer(current[0].number)
            (self.path / CANARY_FILE).unlink(missing_ok=True)
            _fsync_dir(self.path)
            if promote and stale:
                raise stale
            return self.serving()

    def _stale_baseline(self, expected_serving: int | None) -> StaleBaselineError | None:
        current = self.serving()
        return stale_baseline(self.uri, current.number if current else None, expected_serving)

    def _check_baseline(self, expected_serving: int | None) -> None:
        stale = self._stale_baseline(expected_serving)
        if stale:
            raise stale

    def _existing(self, number: int) -> Version:
        version = Version(number, self._versions / str(number))
        if not version.model_dir.is_dir():
            raise RegistryError(
                f"version {number} does not exist in {self.path}; "
                f"choose one of {[v.number for v in self.versions()]}"
            )
        return version

    def _write_pointer(self, number: int) -> None:
        self._write_json(POINTER_FILE, {"version": number, "updated_unix": time.time()})

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.path / f".{name}.{uuid.uuid4().hex}"
        with open(tmp, "w") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path / name)
        _fsync_dir(self.path)

    def _remove_stale_staging(self) -> None:
        # Only called under the lock: any staging dir left is from a run that died mid-push.
        for stale in self._versions.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        for name in (POINTER_FILE, CANARY_FILE):
            for stale in self.path.glob(f".{name}.*"):
                stale.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(dirpath))
