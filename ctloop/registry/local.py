"""The registry in a local folder (``LocalRegistry``): what ``ctloop.registry.base`` lays out,
under ``<root>/<model_name>/``, plus ``versions/.staging-*/`` (pushes in progress; never visible
as a version). The ``.lock`` file is held with ``flock`` by the run that writes.

A version directory appears only by ``rename`` of a complete, fsynced staging directory, and
a pointer only by ``rename`` of a complete, fsynced file, so a reader never sees a half-written
version or pointer, whatever point a writer is killed at.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctloop.errors import RegistryError
from ctloop.registry.base import (
    LOCK_FILE,
    MODEL_DIR,
    POINTER_FILES,
    PRODUCTION,
    RECORD_FILE,
    SCHEMA_FILE,
    STATS_RE,
    STATS_SUFFIX,
    HeldLock,
    Version,
    validate_model_name,
)
from ctloop.registry.pointers import Pointers

STAGING_PREFIX = ".staging-"


class LocalRegistry(Pointers):
    """The versions of one model under a local registry root (the ``Registry`` protocol; its
    pointer operations are ``pointers.Pointers``')."""

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
        return [self._version(n) for n in numbers]

    @contextlib.contextmanager
    def lock(self, timeout_s: float = 60.0) -> Iterator[HeldLock]:
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
                yield HeldLock()  # an flock is held until released: nothing to check
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
        stage: str = PRODUCTION,
        lock_timeout_s: float = 60.0,
    ) -> Version:
        """Adds a new numbered version atomically and (by default) points serving at it.

        Args:
            model_dir: The SavedModel directory to copy in.
            schema_path: The schema file the model was validated with.
            record: The run record stored as record.json.
            expected_serving: The version ``stage`` served when the model was judged (None:
                none served). Checked under the lock, so a model blessed against version n is
                never pushed over a version another run pushed meanwhile.
            serve: Move the stage's pointer to the new version.
            stage: The stage whose pointer ``expected_serving`` and ``serve`` concern.
            lock_timeout_s: How long to wait for a concurrent push to finish.

        Returns:
            The new version.
        """
        with self.lock(lock_timeout_s):
            self._check_baseline(expected_serving, stage)
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
            version = self._version(number)
            if serve:
                self._write_pointer(number, stage)
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
            if (m := STATS_RE.match(p.name)) and int(m.group(1)) < span
        ]
        return max(stored) if stored else None

    # --- what base.Pointers builds on ----------------------------------------------------------

    def _version(self, number: int) -> Version:
        return Version(number, self._versions / str(number))

    def _missing(self, number: int) -> str | None:
        model_dir = self._versions / str(number) / MODEL_DIR
        return None if model_dir.is_dir() else f"has no model at {model_dir}"

    def _where(self, name: str) -> str:
        return str(self.path / name)

    def _read_bytes(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            return None

    def _remove(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)
        _fsync_dir(self.path)

    def _write_bytes(self, name: str, body: bytes) -> None:
        final = self.path / name
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}")
        with open(tmp, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    def _remove_stale_staging(self) -> None:
        # Only called under the lock: any staging dir left is from a run that died mid-push.
        for stale in self._versions.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        for name in POINTER_FILES:
            for stale in self.path.glob(f".{name}.*"):
                stale.unlink(missing_ok=True)
        for stale in self._versions.glob(f"*/.{RECORD_FILE}.*"):  # a decision's, half-written
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
