"""The model registry on an S3-compatible object store, shared by every task of every run.

On a cluster each task runs in its own pod: a registry in a pod's folder would not outlive the
task. This one lives under ``s3://<bucket>/<prefix>/<model_name>/`` with the local registry's
layout (``versions/<n>/{model/,schema.pbtxt,record.json}``, ``SERVING``,
``statistics/span-<s>.stats.tfrecord``) and the same guarantees, from what S3 offers instead of
``rename`` and ``flock``:

- A version is complete when its ``record.json`` exists, written after every other object of
  the version; readers ignore a number without it, so a push killed half-way is never visible.
  Numbers come from every prefix under ``versions/``, complete or not, so one is never reused.
- ``SERVING`` and the statistics are single PUTs, which S3 makes visible whole or not at all.
- The push lock is ``.lock``, created only if absent (``If-None-Match: *``, conditional writes
  of AWS S3, MinIO and SeaweedFS) and holding an expiry a minute ahead, which its holder renews
  (a PUT conditional on the ETag it wrote) while it holds the lock. A lock left by a killed run
  is taken over once expired, by a delete conditional on its ETag, so two runs cannot both take
  it. A holder stops before it completes a version or moves the pointer if its renewal failed
  (taken over) or its lease is within ``LOCK_RENEW_S`` of running out unrenewed (renewals
  failing, or the process frozen): the lock is then no longer surely its own.
- The objects of versions a killed push left incomplete are deleted by the next push, once its
  own version is complete (so their numbers stay below every complete one, never reused).

Readers get a ``Version`` whose files are downloaded to a local cache folder, so TFDV and TF
read them as they read the local registry's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctloop.data import storage
from ctloop.errors import ConfigError, RegistryError
from ctloop.registry.local import (
    ANY_SERVING,
    LOCK_FILE,
    MODEL_DIR,
    POINTER_FILE,
    RECORD_FILE,
    SCHEMA_FILE,
    STATS_SUFFIX,
    Version,
    stale_baseline,
    validate_model_name,
)

LOCK_LEASE_S = 60.0  # a killed run's lock is free this long after its last renewal
LOCK_RENEW_S = 15.0  # how often the holder renews; with less lease than this left, it stops writing
log = logging.getLogger(__name__)
_STATS_RE = re.compile(r"^span-(\d+)" + re.escape(STATS_SUFFIX) + "$")


class S3Registry:
    """The versions of one model under ``s3://bucket/prefix/``: the local ``Registry``'s reads
    and pushes (not its canary, which belongs to a local server)."""

    def __init__(self, root: str, model_name: str, s3_endpoint_url: str | None = None,
                 cache_dir: str | os.PathLike[str] | None = None):
        self.model_name = validate_model_name(model_name)
        if not root.startswith("s3://") or not root[5:].split("/", 1)[0]:
            raise ConfigError(f"registry URI {root!r} is not s3://BUCKET[/PREFIX]")
        self.root = root.rstrip("/")
        self.bucket, _, prefix = self.root[5:].partition("/")
        self.prefix = f"{prefix}/{model_name}/" if prefix else f"{model_name}/"
        self.endpoint_url = s3_endpoint_url or None
        self._client = storage.s3_client(self.endpoint_url)
        self._cache = Path(cache_dir or tempfile.mkdtemp(prefix="ctloop-registry-"))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    # --- reads ----------------------------------------------------------------------------

    def versions(self) -> list[Version]:
        """Complete versions, oldest first (downloaded only when one is asked for by number)."""
        return [Version(n, self._cache / "versions" / str(n)) for n in sorted(self._numbers())]

    def serving(self) -> Version | None:
        """The version the serving pointer names, downloaded; None before the first push."""
        data = self._read_json(POINTER_FILE)
        if data is None:
            return None
        number = int(data["version"])
        if number not in self._numbers():
            raise RegistryError(
                f"registry pointer {self.uri}{POINTER_FILE} names version {number}, which is not "
                f"complete (no {RECORD_FILE}); point it at a complete version")
        return self._download(number)

    def previous_statistics(self, span: int) -> tuple[int, Path] | None:
        """The stored statistics of the latest span before ``span``, downloaded."""
        stored = [(int(m.group(1)), key) for key in self._keys("statistics/")
                  if (m := _STATS_RE.match(key.rsplit("/", 1)[-1])) and int(m.group(1)) < span]
        if not stored:
            return None
        found, key = max(stored)
        local = self._cache / key[len(self.prefix):]
        self._get(key, local)
        return found, local

    # --- writes ---------------------------------------------------------------------------

    def save_statistics(self, span: int, stats_file: str | os.PathLike[str]) -> str:
        """Stores a span's train statistics (replacing a rerun's); one PUT is atomic."""
        key = f"{self.prefix}statistics/span-{span}{STATS_SUFFIX}"
        self._put_file(stats_file, key)
        return f"s3://{self.bucket}/{key}"

    @contextlib.contextmanager
    def lock(self, timeout_s: float = 60.0) -> Iterator[_Lease]:
        """Holds the registry's push lock, renewing its lease in the background; raises
        RegistryError if another run keeps it. The ``_Lease`` yielded says whether it is still
        held: check it before each write that must be the holder's alone."""
        key = self.prefix + LOCK_FILE
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + timeout_s
        while True:
            expires = time.time() + LOCK_LEASE_S  # before the PUT: never later than stored
            etag = self._create(key, _lease_body(owner, expires))
            if etag:
                break
            held_until = self._expire_stale_lock(key)
            if time.monotonic() >= deadline:
                until = ("a time it does not say" if held_until is None else
                         time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(held_until)))
                raise RegistryError(
                    f"registry {self.uri} is locked by another run for over {timeout_s:g}s "
                    f"({key}, held until {until}); wait for that run to finish, then rerun "
                    "(a killed run's lock frees itself then)")
            time.sleep(0.5)
        lease = _Lease(self, key, owner, etag, expires)
        try:
            yield lease
        finally:
            if lease.stop():  # not taken over: release it (a lost lock is another run's now)
                self._release(key, lease)

    def push(self, model_dir: str | os.PathLike[str], schema_path: str | os.PathLike[str],
             record: dict[str, Any], *, expected_serving: int | None, serve: bool = True,
             lock_timeout_s: float = 60.0) -> Version:
        """Adds a new numbered version and (by default) points serving at it; see ``Registry``.

        ``record.json`` goes last: until it is there the version does not exist for readers.
        """
        with self.lock(lock_timeout_s) as lease:
            data = self._read_json(POINTER_FILE)
            stale = stale_baseline(self.uri, int(data["version"]) if data else None,
                                   expected_serving)
            if stale:
                raise stale
            number = max(self._numbers(complete=False), default=0) + 1
            base = f"{self.prefix}versions/{number}/"
            for path in sorted(Path(model_dir).rglob("*")):
                if path.is_file():
                    self._put_file(path, f"{base}{MODEL_DIR}/{path.relative_to(model_dir)}")
            self._put_file(schema_path, base + SCHEMA_FILE)
            lease.check(f"making version {number} complete")
            self._put(base + RECORD_FILE, json.dumps({**record, "version": number}, indent=2,
                                                     sort_keys=True).encode())
            if serve:
                lease.check(f"pointing serving at version {number}")
                self._write_pointer(number)
            self._delete_incomplete(below=number, lease=lease)
        local = self._cache / "versions" / str(number)
        shutil.copytree(model_dir, local / MODEL_DIR, dirs_exist_ok=True)
        shutil.copyfile(schema_path, local / SCHEMA_FILE)
        (local / RECORD_FILE).write_text(json.dumps({**record, "version": number}))
        return Version(number, local)

    def set_serving(self, number: int, *, expected_serving: Any = ANY_SERVING,
                    lock_timeout_s: float = 60.0) -> Version:
        """Moves the serving pointer to an existing, complete version; with
        ``expected_serving``, only over that version (checked under the lock; see
        ``Registry.set_serving``).

        Raises:
            StaleBaselineError: Another version than ``expected_serving`` serves now.
        """
        with self.lock(lock_timeout_s) as lease:
            if number not in self._numbers():
                raise RegistryError(
                    f"version {number} does not exist in {self.uri}; choose one of "
                    f"{sorted(self._numbers())}")
            if expected_serving is not ANY_SERVING:
                data = self._read_json(POINTER_FILE)
                stale = stale_baseline(self.uri, int(data["version"]) if data else None,
                                       expected_serving)
                if stale:
                    raise stale
            lease.check(f"pointing serving at version {number}")
            self._write_pointer(number)
        return Version(number, self._cache / "versions" / str(number))

    # --- S3 -------------------------------------------------------------------------------

    def _numbers(self, complete: bool = True) -> set[int]:
        """Numbers of complete versions; with ``complete=False``, of every version prefix."""
        return {number for number, rest in map(self._split_version, self._keys("versions/"))
                if number is not None and (rest == RECORD_FILE or not complete)}

    def _delete_incomplete(self, below: int, lease: _Lease) -> None:
        """Deletes the objects of incomplete versions numbered below ``below``: pushes killed
        half-way, invisible to readers. Called by the lock holder once its own version
        ``below`` is complete: numbers are allocated above every prefix under the lock, so no
        push is writing these, and with ``below`` complete above them they are never reused.

        Best effort: the push is complete, so a failure here is logged, not raised; the next
        push deletes what is left.
        """
        if not lease.holds():
            return
        try:
            keys = self._keys("versions/")
            complete = {number for number, rest in map(self._split_version, keys)
                        if rest == RECORD_FILE}
            stale = [key for key in keys
                     if (n := self._split_version(key)[0]) is not None and n < below
                     and n not in complete]
            for key in stale:
                self._call(f"delete {key}", self._client.delete_object, Bucket=self.bucket,
                           Key=key)
        except RegistryError as exc:
            log.warning("%s; the next push deletes the rest of the incomplete versions", exc)
            return
        if stale:
            log.info("registry %s: deleted %d objects of incomplete versions %s", self.uri,
                     len(stale), sorted({self._split_version(key)[0] for key in stale}))

    def _split_version(self, key: str) -> tuple[int | None, str]:
        """``(number, rest)`` of a key under ``versions/``; number None if not a version's."""
        number, _, rest = key[len(self.prefix) + len("versions/"):].partition("/")
        return (int(number) if number.isdigit() else None), rest

    def _release(self, key: str, lease: _Lease) -> None:
        """Deletes the lock if it is still this run's (its ETag). Best effort: a lock taken
        over meanwhile is left to its new holder, and one not deleted expires by itself."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_object(Bucket=self.bucket, Key=key, IfMatch=lease.etag)
        except (BotoCoreError, ClientError) as exc:
            if _code(exc) not in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                log.warning("registry %s: could not release the push lock %s (%s); it frees "
                            "itself in %gs", self.uri, key, exc, LOCK_LEASE_S)

    def _keys(self, under: str) -> list[str]:
        pages = self._call("list", lambda: list(
            self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + under)))
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def _download(self, number: int) -> Version:
        local = self._cache / "versions" / str(number)
        if not (local / RECORD_FILE).is_file():  # versions never change once complete
            base = f"{self.prefix}versions/{number}/"
            for key in self._keys(f"versions/{number}/"):
                if key != base + RECORD_FILE:
                    self._get(key, local / key[len(base):])
            self._get(base + RECORD_FILE, local / RECORD_FILE)
        return Version(number, local)

    def _read_json(self, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        key = self.prefix + name
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._error(f"read {key}", exc) from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise RegistryError(f"registry pointer s3://{self.bucket}/{key} is unreadable "
                                f"({exc}); restore it or delete it to start cold") from exc

    def _write_pointer(self, number: int) -> None:
        self._put(self.prefix + POINTER_FILE,
                  json.dumps({"version": number, "updated_unix": time.time()}).encode())

    def _create(self, key: str, body: bytes) -> str | None:
        """PUTs ``key`` only if absent; its ETag, or None if it exists."""
        from botocore.exceptions import ClientError

        try:
            return self._client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                           IfNoneMatch="*")["ETag"]
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return None
            raise self._error(f"create {key}", exc) from exc

    def _expire_stale_lock(self, key: str) -> float | None:
        """Frees the lock if its lease ran out; returns when the lease ends (None: unknown)."""
        from botocore.exceptions import ClientError

        try:
            held = self._client.get_object(Bucket=self.bucket, Key=key)
            expires = float(json.loads(held["Body"].read()).get("expires_unix", 0))
            if time.time() > expires:  # its run died holding it: free it, unless renewed
                self._client.delete_object(Bucket=self.bucket, Key=key, IfMatch=held["ETag"])
            return expires
        except ClientError as exc:
            if _code(exc) not in ("NoSuchKey", "404", "PreconditionFailed", "412"):
                raise self._error(f"inspect {key}", exc) from exc
        except ValueError:  # not ours to parse: leave it to expire by hand
            pass
        return None

    def _put(self, key: str, body: bytes) -> None:
        self._call(f"write {key}", self._client.put_object, Bucket=self.bucket, Key=key,
                   Body=body)

    def _put_file(self, path: str | os.PathLike[str], key: str) -> None:
        with open(path, "rb") as handle:
            self._put(key, handle.read())

    def _get(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}")
        self._call(f"read {key}", self._client.download_file, self.bucket, key, str(tmp))
        os.replace(tmp, local)

    def _call(self, what: str, function, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return function(*args, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: Exception) -> RegistryError:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return RegistryError(
            f"registry {self.uri}: cannot {what} ({first}); check the bucket, the credentials "
            f"(boto3's standard chain) and the S3 endpoint ({self.endpoint_url or 'default'})")


def _lease_body(owner: str, expires: float) -> bytes:
    return json.dumps({"owner": owner, "expires_unix": expires}).encode()


class _Lease:
    """A held push lock whose expiry a daemon thread moves ahead every ``LOCK_RENEW_S``.

    Each renewal is a PUT conditional on the ETag of the previous one: if another run took the
    lock over (this one's lease ran out, e.g. the process was frozen), the renewal fails and
    the lease is lost. A renewal failing for another reason (the network) is retried until the
    lease would run out.
    """

    def __init__(self, registry: S3Registry, key: str, owner: str, etag: str, expires: float):
        self.registry, self.key, self.owner, self.etag = registry, key, owner, etag
        self.lost: str | None = None
        self._expires = expires  # as written, from a clock read before the PUT
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name="ctloop-lease")
        self._thread.start()

    def holds(self) -> bool:
        """Whether the lock is surely still this run's: not taken over, and its lease not
        within ``LOCK_RENEW_S`` of running out (then renewals failed or the process froze, and
        another run may take it over before a write lands)."""
        return self.lost is None and time.time() + LOCK_RENEW_S < self._expires

    def check(self, before: str) -> None:
        """Raises RegistryError unless the lock is surely still this run's (``holds``)."""
        if self.holds():
            return
        why = self.lost or (
            "its lease, until "
            + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self._expires))
            + f", was not renewed {LOCK_RENEW_S:g}s before it ends")
        raise RegistryError(
            f"registry {self.registry.uri} lost its push lock before {before} ({why}); nothing "
            "more was written, another run may hold the lock now: rerun")

    def stop(self) -> bool:
        """Stops renewing; True unless another run took the lock over (then it is theirs)."""
        self._stopped.set()
        self._thread.join()
        return self.lost is None

    def _renew(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client, bucket = self.registry._client, self.registry.bucket
        while not self._stopped.wait(LOCK_RENEW_S):
            expires = time.time() + LOCK_LEASE_S
            try:
                self.etag = client.put_object(Bucket=bucket, Key=self.key, IfMatch=self.etag,
                                              Body=_lease_body(self.owner, expires))["ETag"]
                self._expires = expires
            except (BotoCoreError, ClientError, OSError) as exc:
                taken = _code(exc) in ("PreconditionFailed", "412", "NoSuchKey", "404")
                if taken or time.time() + LOCK_RENEW_S >= self._expires:
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    self.lost = ("taken over by another run" if taken else
                                 f"could not renew it before it expired: {first}")
                    log.error("registry %s: push lock lost: %s", self.registry.uri, self.lost)
                    return


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
