"""A registry writer for tests/test_faults.py that can kill itself (SIGKILL) at a chosen step.

Run as ``python fault_child.py SPEC.json``. In this process only, it wraps the primitives the
registries write with: for ``LocalRegistry`` ``os.mkdir`` (also under ``os.makedirs`` and
``Path.mkdir``), ``open`` for writing and every ``write`` on such a file, ``shutil.copyfile``
(also under ``copytree``), ``os.fsync``, ``os.rename``, ``os.replace``, ``os.unlink``,
``shutil.rmtree`` and ``fcntl.flock``, on paths under the registry root; for ``S3Registry`` its
client's ``put_object`` and ``delete_object`` made by the main thread (not the lock lease's
renewals, whose timing varies). Each call is one numbered operation. The spec's
``kill_at`` ``[n, phase]`` sends SIGKILL to this process before operation n, after it, or
("mid") half-way through it: half of a write or of a file copy on disk, or half of a PUT's body
sent over the socket. Every operation is appended to the spec's ``trace`` file (one JSON list
per line, written with ``os.write`` so a kill loses none), then ``["KILL", n, phase]``.

The registry code runs unchanged; only this process's view of ``os``, ``io``, ``shutil``,
``fcntl`` and the S3 client is wrapped. Step results (or the error a step raised) go to the
spec's ``result`` file as JSON.
"""

from __future__ import annotations

import builtins
import fcntl
import io
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from ctloop.errors import CtloopError, StaleBaselineError
from ctloop.registry import LocalRegistry
from ctloop.registry import s3 as registry_s3
from ctloop.registry.s3 import S3Registry


class Faults:
    """Numbers the wrapped operations, traces them, and kills or pauses at the chosen one."""

    def __init__(self, spec: dict):
        self.root = os.path.realpath(spec["root"]) if spec["kind"] == "local" else None
        self.kill_at = tuple(spec["kill_at"]) if spec.get("kill_at") else None
        # {"kind", "signal", "until"}: after the first op of that kind, touch signal and wait
        # until the file "until" exists (a writer holding the lock, for as long as a test needs)
        self.pause = spec.get("pause")
        self.count = 0
        self.busy = False  # inside a wrapped operation: what it calls is part of it
        self.trace = os.open(spec["trace"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log(self, entry: list) -> None:
        os.write(self.trace, (json.dumps(entry) + "\n").encode())

    def counted(self, path) -> bool:
        if self.busy:
            return False
        if self.root is None:
            return True
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        return real == self.root or real.startswith(self.root + os.sep)

    def die(self, n: int, phase: str) -> None:
        self.log(["KILL", n, phase])
        os.kill(os.getpid(), signal.SIGKILL)

    def op(self, kind: str, path, do, mid=None, extra: str = ""):
        """Runs ``do()`` as operation n, killing before, "mid" (``mid()``), or after it."""
        if not self.counted(path):
            return do()
        self.count += 1
        n = self.count
        where = os.fsdecode(path)
        self.log([n, kind, os.path.realpath(where) if self.root else where, extra])
        if self.kill_at == (n, "before"):
            self.die(n, "before")
        if self.kill_at == (n, "mid"):
            self.busy = True
            mid()  # leaves the operation half done, or kills the process itself
            self.die(n, "mid")
        self.busy = True
        try:
            result = do()
        finally:
            self.busy = False
            if self.kill_at == (n, "after"):  # also after an operation that raised
                self.die(n, "after")
        if self.pause and self.pause["kind"] == kind:
            self.pause, pause = None, self.pause
            Path(pause["signal"]).touch()
            deadline = time.monotonic() + 60
            while not os.path.exists(pause["until"]) and time.monotonic() < deadline:
                time.sleep(0.01)
        return result


class Writer:
    """A file open for writing whose every ``write`` is an operation."""

    def __init__(self, faults: Faults, handle, path):
        self._faults, self._handle, self._path = faults, handle, path

    def write(self, data):
        def half():
            self._handle.write(data[: len(data) // 2])
            self._handle.flush()

        return self._faults.op("write", self._path, lambda: self._handle.write(data), half)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __getattr__(self, name):
        return getattr(self._handle, name)


def wrap_local(faults: Faults) -> None:
    real_open, real_copyfile = builtins.open, shutil.copyfile
    real_rmtree, real_flock = shutil.rmtree, fcntl.flock

    def path_op(kind: str, real):
        def wrapped(path, *args, **kwargs):
            return faults.op(kind, path, lambda: real(path, *args, **kwargs))
        return wrapped

    def move_op(kind: str, real):
        def wrapped(src, dst, *args, **kwargs):
            return faults.op(kind, dst, lambda: real(src, dst, *args, **kwargs),
                             extra=os.path.realpath(src))
        return wrapped

    def fd_path(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def opener(file, mode="r", *args, **kwargs):
        writes = isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+")
        if not writes or not faults.counted(file):
            return real_open(file, mode, *args, **kwargs)
        handle = faults.op("open", file, lambda: real_open(file, mode, *args, **kwargs),
                           extra=mode)
        return Writer(faults, handle, file)

    def copyfile(src, dst, *, follow_symlinks=True):
        def half():
            data = Path(src).read_bytes()
            with real_open(dst, "wb") as out:
                out.write(data[: len(data) // 2])

        return faults.op("copyfile", dst,
                         lambda: real_copyfile(src, dst, follow_symlinks=follow_symlinks), half,
                         extra=os.fsdecode(src))

    def fsync(fd):
        return faults.op("fsync", fd_path(fd), lambda: real_fsync(fd))

    def flock(handle, operation):
        fd = handle if isinstance(handle, int) else handle.fileno()
        name = "LOCK_UN" if operation & fcntl.LOCK_UN else "LOCK_EX"
        return faults.op("flock", fd_path(fd), lambda: real_flock(handle, operation), extra=name)

    real_fsync = os.fsync
    os.mkdir = path_op("mkdir", os.mkdir)
    os.unlink = path_op("unlink", os.unlink)
    os.rename = move_op("rename", os.rename)
    os.replace = move_op("replace", os.replace)
    os.fsync = fsync
    builtins.open = io.open = opener
    shutil.copyfile = copyfile
    shutil.rmtree = path_op("rmtree", real_rmtree)
    fcntl.flock = flock


def _sendall_killing_half_way(faults: Faults, n: int):
    """``socket.sendall`` that sends the request's headers and half its body, then dies."""
    real = socket.socket.sendall
    state = {"head": b"", "length": None, "sent": 0}

    def sendall(sock, data, *args):
        if threading.current_thread() is not threading.main_thread():  # the lease's renewals
            return real(sock, data, *args)
        data = bytes(data)
        if state["length"] is None:
            state["head"] += data
            end = state["head"].find(b"\r\n\r\n")
            if end < 0:
                return real(sock, data, *args)
            found = re.search(rb"(?im)^content-length:\s*(\d+)", state["head"][:end])
            state["length"] = int(found.group(1))
            body = state["head"][end + 4:]
            real(sock, data[: len(data) - len(body)])
            data = body
        half = state["length"] // 2
        if state["sent"] + len(data) >= half:
            real(sock, data[: half - state["sent"]])
            faults.log(["SENT", half, state["length"]])
            faults.die(n, "mid")
        state["sent"] += len(data)
        return real(sock, data, *args)

    return sendall


def wrap_s3(faults: Faults, registry: S3Registry) -> None:
    client = registry._client
    real_put, real_delete = client.put_object, client.delete_object

    def put_object(**kwargs):
        if threading.current_thread() is not threading.main_thread():  # the lease's renewals
            return real_put(**kwargs)

        def half():
            socket.socket.sendall = _sendall_killing_half_way(faults, faults.count)
            real_put(**kwargs)

        return faults.op("put_object", kwargs["Key"], lambda: real_put(**kwargs), half)

    def delete_object(**kwargs):
        return faults.op("delete_object", kwargs["Key"], lambda: real_delete(**kwargs))

    client.put_object, client.delete_object = put_object, delete_object


def run_step(registry, step: list, spec: dict):
    name, args = step[0], step[1:]
    if name == "push":
        (options,) = args
        version = registry.push(spec["model"], spec["schema"], options["record"],
                                expected_serving=options["expected_serving"],
                                serve=options.get("serve", True),
                                lock_timeout_s=options.get("lock_timeout_s", 60.0))
        return version.number
    if name == "push_until":  # a writer that reruns on a stale baseline until it pushed k times
        (options,) = args
        pushed = []
        while len(pushed) < options["count"]:
            current = registry.serving()
            try:
                pushed.append(registry.push(
                    spec["model"], spec["schema"], options["record"],
                    expected_serving=current.number if current else None).number)
            except StaleBaselineError:
                continue
        return pushed
    if name == "set_serving":
        return registry.set_serving(args[0]).number
    if name == "start_canary":
        current = registry.serving()  # the canary's model was judged against what serves
        registry.start_canary(args[0], args[1],
                              expected_serving=current.number if current else None)
        return None
    if name == "end_canary":
        ended = registry.end_canary(promote=args[0])
        return ended.number if ended else None
    raise ValueError(f"unknown step {name!r}")


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if spec["kind"] == "local":
        registry = LocalRegistry(spec["root"], spec["model_name"])
    else:
        if spec.get("lease_s"):  # a short lease, renewed four times per lease as by default
            registry_s3.LOCK_LEASE_S = spec["lease_s"]
            registry_s3.LOCK_RENEW_S = spec["lease_s"] / 4
        registry = S3Registry(spec["root"], spec["model_name"], spec["endpoint"],
                              cache_dir=spec["cache"])
    faults = Faults(spec)
    if spec["kind"] == "local":
        wrap_local(faults)
    else:
        wrap_s3(faults, registry)
    if spec.get("ready"):
        Path(spec["ready"]).touch()
    deadline = time.monotonic() + 60
    while spec.get("start") and not os.path.exists(spec["start"]):
        if time.monotonic() > deadline:
            sys.exit("no start signal within 60 s")
        time.sleep(0.002)
    results = []
    for step in spec["steps"]:
        try:
            results.append({"ok": run_step(registry, step, spec)})
        except CtloopError as exc:
            results.append({"error": type(exc).__name__, "message": str(exc)})
            break
    Path(spec["result"]).write_text(json.dumps({"results": results, "ops": faults.count}))


if __name__ == "__main__":
    main(sys.argv[1])
