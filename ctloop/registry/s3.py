"""The model registry on an S3-compatible object store (``S3Registry``), shared by every task of
every run: on a cluster each task runs in its own pod, where a folder would not outlive it.

It lives under ``s3://<bucket>/<prefix>/<model_name>/`` with the layout of
``ctloop.registry.base`` and the local registry's guarantees, from what S3 offers instead of
``rename`` and ``flock``:

- A version is complete when its ``record.json`` exists, written after every other object of
  the version (and only if absent); readers ignore a number without it, so a push killed
  half-way is never visible. Numbers come from every prefix under ``versions/``, complete or
  not, so one is never reused.
- The pointers, the statistics and a record rewritten to add a decision are single PUTs,
  which S3 makes visible whole or not at all.
- The push lock is ``.lock``, created only if absent (``If-None-Match: *``, conditional writes
  of AWS S3, MinIO and SeaweedFS) and holding an expiry a minute ahead, which its holder renews
  (a PUT conditional on the ETag it wrote) while it holds the lock. A lock left by a killed run
  is taken over once expired, by a delete conditional on its ETag, so two runs cannot both take
  it. The holder checks its lease before every write under the lock, and stops if its renewal
  failed (taken over) or its lease is within ``LOCK_RENEW_S`` of running out unrenewed (the
  process froze, say): the lock, and the version number it picked, may be another run's now.
- The objects of versions a killed push left incomplete are deleted by the next push, once its
  own version is complete (so their numbers stay below every complete one, never reused).

A ``Version`` downloads each file (the schema, the model folder) when first asked for, into a
local folder TFDV and TF read as they read the local registry's. The folder is made at the first
download and removed by ``close()``, at the end of a ``with`` block, or when the process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
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
from ctloop.registry.base import (
    LOCK_FILE,
    MODEL_DIR,
    PRODUCTION,
    RECORD_FILE,
    SCHEMA_FILE,
    STATS_RE,
    STATS_SUFFIX,
    Version,
    validate_model_name,
)
from ctloop.registry.pointers import Pointers

LOCK_LEASE_S = 60.0  # a killed run's lock is free this long after its last renewal
LOCK_RENEW_S = 15.0  # how often the holder renews; with less lease than this left, it stops writing
log = logging.getLogger(__name__)
# Temporary folders of downloaded files, removed at exit if not closed before (not when their
# registry is collected: a path handed out, a span's statistics say, would vanish under its user)
_TEMPORARY: dict[Path, int] = {}  # folder -> pid of the process that made it


class S3Registry(Pointers):
    """The versions of one model under ``s3://bucket/prefix/`` (the ``Registry`` protocol; its
    pointer operations are ``pointers.Pointers``').

    ``cache_dir``: where downloaded files go (kept); default: a temporary folder, made at the
    first download and removed by ``close()`` or at exit.
    """

    def __init__(self, root: str, model_name: str, s3_endpoint_url: str | None = None,
                 cache_dir: str | os.PathLike[str] | None = None):
        self.model_name = validate_model_name(model_name)
        if not root.startswith("s3://") or not root[5:].split("/", 1)[0]:
            raise ConfigError(f"registry URI {root!r} is not s3://BUCKET[/PREFIX]")
        self.root = root.rstrip("/")
        self.bucket, _, prefix = self.root[5:].partition("/")
        self.prefix = f"{prefix}/{model_name}/" if prefix else f"{model_name}/"
        self.endpoint_url = s3_endpoint_url or None
        try:
            self._client = storage.s3_client(self.endpoint_url)
        except ImportError as exc:
            raise ConfigError(
                f"registry {self.uri} needs boto3, which this environment lacks ({exc}); "
                "install boto3 here, or use a registry folder") from exc
        self._fetching = threading.Lock()
        self._temporary = cache_dir is None
        self._cache = Path(cache_dir) if cache_dir is not None else Path(
            tempfile.gettempdir()) / f"ctloop-registry-{uuid.uuid4().hex}"  # made when needed

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def close(self) -> None:
        """Removes the temporary folder of downloaded files (not a ``cache_dir`` given)."""
        if self._temporary:
            _TEMPORARY.pop(self._cache, None)
            shutil.rmtree(self._cache, ignore_errors=True)

    def __enter__(self) -> S3Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads ----------------------------------------------------------------------------

    def versions(self) -> list[Version]:
        """Complete versions, oldest first (their files downloaded when asked for)."""
        return [self._version(n) for n in sorted(self._numbers())]

    def previous_statistics(self, span: int) -> tuple[int, Path] | None:
        """The stored statistics of the latest span before ``span``, downloaded."""
        stored = [(int(m.group(1)), key) for key in self._keys("statistics/")
                  if (m := STATS_RE.match(key.rsplit("/", 1)[-1])) and int(m.group(1)) < span]
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
             stage: str = PRODUCTION, lock_timeout_s: float = 60.0) -> Version:
        """Adds a new numbered version and (by default) points the stage at it; see
        ``LocalRegistry.push``. Each PUT follows a check of the lease, so a holder that lost the
        lock writes nothing more; ``record.json`` goes last, and only if absent."""
        with self.lock(lock_timeout_s) as lease:
            self._check_baseline(expected_serving, stage)
            number = max(self._numbers(complete=False), default=0) + 1
            base = f"{self.prefix}versions/{number}/"
            files = [(path, f"{MODEL_DIR}/{path.relative_to(model_dir).as_posix()}")
                     for path in sorted(Path(model_dir).rglob("*")) if path.is_file()]
            for path, name in [*files, (Path(schema_path), SCHEMA_FILE)]:
                lease.check(f"writing {name} of version {number}")
                self._put_file(path, base + name)
            lease.check(f"making version {number} complete")
            body = json.dumps({**record, "version": number}, indent=2, sort_keys=True).encode()
            if self._create(base + RECORD_FILE, body) is None:
                raise RegistryError(
                    f"registry {self.uri}: version {number} was made complete by another run "
                    "while this one wrote it (this run lost its push lock); rerun")
            if serve:
                lease.check(f"pointing {stage} at version {number}")
                self._write_pointer(number, stage)
            self._delete_incomplete(below=number, lease=lease)
        return self._version(number)

    # --- what base.Pointers builds on -------------------------------------------------------

    def _version(self, number: int) -> Version:
        return Version(number, self._cache / "versions" / str(number), fetch=self._fetch)

    def _missing(self, number: int) -> str | None:
        key = f"{self.prefix}versions/{number}/{RECORD_FILE}"  # one HEAD, not a listing
        if self._unless_absent(f"read {key}", self._client.head_object, Bucket=self.bucket,
                               Key=key) is None:
            return f"is not complete (no {RECORD_FILE})"
        return None

    def _where(self, name: str) -> str:
        return f"{self.uri}{name}"

    def _read_bytes(self, name: str) -> bytes | None:
        key = self.prefix + name
        found = self._unless_absent(f"read {key}", self._client.get_object, Bucket=self.bucket,
                                    Key=key)
        return None if found is None else found["Body"].read()

    def _write_bytes(self, name: str, body: bytes) -> None:
        self._put(self.prefix + name, body)  # one PUT: visible whole or not at all
        with self._fetching:  # a record rewritten (a decision): the copy here is not it now
            (self._cache / name).unlink(missing_ok=True)

    def _remove(self, name: str) -> None:
        key = self.prefix + name
        self._call(f"delete {key}", self._client.delete_object, Bucket=self.bucket, Key=key)

    # --- S3 -------------------------------------------------------------------------------

    def _fetch(self, number: int, name: str) -> None:
        """Downloads ``name`` (a file, or the model folder) of version ``number`` unless it is
        here: each appears whole, by one rename, and versions never change once complete."""
        local = self._cache / "versions" / str(number) / name
        with self._fetching:
            if local.exists():
                return
            base = f"{self.prefix}versions/{number}/"
            if name != MODEL_DIR:
                self._get(base + name, local, missing_ok=True)
                return
            keys = self._keys(f"versions/{number}/{MODEL_DIR}/")
            staging = local.with_name(f".{name}.{uuid.uuid4().hex}")
            for key in keys:
                self._get(key, staging / key[len(base) + len(MODEL_DIR) + 1:])
            staging.mkdir(parents=True, exist_ok=True)
            os.rename(staging, local)

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
        try:
            keys = self._keys("versions/")
            complete = {number for number, rest in map(self._split_version, keys)
                        if rest == RECORD_FILE}
            stale = [key for key in keys
                     if (n := self._split_version(key)[0]) is not None and n < below
                     and n not in complete]
            for key in stale:
                if not lease.holds():  # the next holder's to delete now
                    return
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

    def _get(self, key: str, local: Path, missing_ok: bool = False) -> None:
        """Downloads ``key`` to ``local`` (appearing whole, by rename); with ``missing_ok``, a
        key that does not exist leaves ``local`` absent."""
        self._make_cache()
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}")
        download = (self._unless_absent if missing_ok else self._call)
        if download(f"read {key}", lambda: self._client.download_file(
                self.bucket, key, str(tmp)) or True):
            os.replace(tmp, local)

    def _make_cache(self) -> None:
        """Makes the folder of downloaded files (again, if ``close()`` removed it)."""
        if self._temporary:
            _TEMPORARY[self._cache] = os.getpid()
        self._cache.mkdir(mode=0o700, parents=not self._temporary, exist_ok=True)

    def _call(self, what: str, function, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return function(*args, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(what, exc) from exc

    def _unless_absent(self, what: str, function, *args, **kwargs):
        """``_call``, but None if the key is absent."""
        from botocore.exceptions import ClientError

        try:
            return self._call(what, function, *args, **kwargs)
        except RegistryError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) in (
                    "NoSuchKey", "404"):
                return None
            raise

    def _error(self, what: str, exc: Exception) -> RegistryError:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return RegistryError(
            f"registry {self.uri}: cannot {what} ({first}); check the bucket, the credentials "
            f"(boto3's standard chain) and the S3 endpoint ({self.endpoint_url or 'default'})")


def _lease_body(owner: str, expires: float) -> bytes:
    return json.dumps({"owner": owner, "expires_unix": expires}).encode()


class _Lease:
    """A held push lock whose expiry a daemon thread moves ahead every ``LOCK_RENEW_S``, by a
    PUT conditional on the ETag of the previous one: if another run took the lock over, the
    renewal fails and the lease is lost; one failing otherwise (the network) is retried until
    the lease would run out."""

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


@atexit.register
def _remove_temporary() -> None:
    for folder in [f for f, pid in _TEMPORARY.items() if pid == os.getpid()]:  # not a fork's
        shutil.rmtree(folder, ignore_errors=True)
