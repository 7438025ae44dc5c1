"""Faults and concurrent runs lose nothing.

- A writer killed (SIGKILL) at any step of a push, a promote or a canary, on a seeded schedule of
  kill points, leaves a consistent registry: every listed version complete, the pointers naming
  complete versions, the previous version serving unless the kill came after the pointer moved,
  and a rerun succeeds. The writer is ``fault_child.py``, a child process that runs the real
  registry code with the filesystem (or S3 client) calls it makes numbered and traced; a dry run
  counts them, the schedule picks kill points before, half-way through and after them.
- The same trace shows what a power loss would need: every file and folder a rename or replace
  publishes is fsynced before it, and the folder it lands in after it.
- A model server killed mid-traffic and restarted on the same registry answers as before.
- Two writers at once: one version, the loser told why and how to rerun.
- Two whole CT runs at once (``ctloop run --local``, two processes, one registry): one
  version, the loser's summary and output say why and to rerun.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from ctloop import contract
from ctloop.errors import CtloopError, RegistryError
from ctloop.registry import LocalRegistry, Registry
from ctloop.registry.s3 import S3Registry
from ctloop.serving import client
from ctloop.serving import process as server_process

CHILD = Path(__file__).with_name("fault_child.py")
SEED = 20261122
MODEL_NAME = "churn"
MID_KINDS = {"write", "copyfile", "put_object"}  # operations a kill can leave half done
CHILD_TIMEOUT_S = 60.0
ROWS = [{"tenure": 3.0, "plan": "basic"}, {"tenure": None, "plan": "premium"},
        {"tenure": 40.0, "plan": ""}]


# --- the model the writers push: a real SavedModel of the serving contract -------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny SavedModel (contract: raw features in, ``probability`` out) and a schema."""
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.weight = tf.Variable(0.05)
            self.bias = tf.Variable(-1.0)
            self.plans = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(["basic", "premium"], [0.2, 0.9]), -0.1)

        @tf.function(input_signature=[{
            "tenure": tf.TensorSpec([None], tf.float32, name="tenure"),
            "plan": tf.TensorSpec([None], tf.string, name="plan")}])
        def serve(self, raw):
            tenure = tf.where(tf.math.is_nan(raw["tenure"]), 12.0, raw["tenure"])
            logit = tenure * self.weight + self.bias + self.plans.lookup(raw["plan"])
            return {contract.OUTPUT_KEYS[contract.BINARY]: tf.sigmoid(logit)}

    folder = tmp_path_factory.mktemp("model")
    scorer = Scorer()
    tf.saved_model.save(scorer, str(folder / "model"),
                        signatures={contract.SERVING_SIGNATURE: scorer.serve})
    (folder / "model" / contract.FEATURES_FILE).write_text(json.dumps({"features": [
        {"name": "tenure", "dtype": contract.NUMERIC},
        {"name": "plan", "dtype": contract.CATEGORICAL}]}))
    (folder / "schema.pbtxt").write_text('feature { name: "tenure" type: FLOAT }\n'
                                         'feature { name: "plan" type: BYTES }\n')
    return folder / "model", folder / "schema.pbtxt"


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# --- running the child ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChildRun:
    returncode: int
    trace: list[list]
    result: dict | None
    stderr: str


def run_child(spec: dict, work: Path) -> ChildRun:
    """Runs fault_child.py on ``spec`` (trace and result files in ``work``) to its end."""
    return finish_child(start_child(spec, work), work)


def start_child(spec: dict, work: Path) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "trace": str(work / "trace"), "result": str(work / "result.json")}
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, str(CHILD), str(work / "spec.json")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish_child(process: subprocess.Popen, work: Path) -> ChildRun:
    """Waits for a child (killing it if it outlives CHILD_TIMEOUT_S); what it did."""
    try:
        _, stderr = process.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    trace_file, result_file = work / "trace", work / "result.json"
    trace = ([json.loads(line) for line in trace_file.read_text().splitlines()]
             if trace_file.exists() else [])
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return ChildRun(process.returncode, trace, result, stderr)


def local_spec(root: Path, model: tuple[Path, Path], steps: list, **extra) -> dict:
    return {"kind": "local", "root": str(root), "model_name": MODEL_NAME,
            "model": str(model[0]), "schema": str(model[1]), "steps": steps, **extra}


# --- the kill schedule ------------------------------------------------------------------------


def positions(trace: list[list]) -> list[tuple[int, str]]:
    """Every kill point of a dry run's trace: before and after each operation, and half-way
    through those a kill can leave half done."""
    found = []
    for n, kind, *_ in trace:
        found.append((n, "before"))
        if kind in MID_KINDS:
            found.append((n, "mid"))
        found.append((n, "after"))
    return found


def schedule(trace: list[list], count: int, seed: int, commits: Callable[[list], bool]
             ) -> list[tuple[int, str]]:
    """``count`` kill points: the first, the last, every point around a commit operation (a
    rename, replace, unlink or PUT that changes what readers see), the rest drawn with
    ``random.Random(seed)``."""
    every = positions(trace)
    fixed = {every[0], every[-1]}
    fixed.update(p for p in every if commits(trace[p[0] - 1]))
    rest = sorted(set(every) - fixed)
    assert len(fixed) <= count <= len(every), (len(fixed), count, len(every))
    return sorted(fixed | set(random.Random(seed).sample(rest, count - len(fixed))))


def done(op: int, kill: tuple[int, str]) -> bool:
    """Whether operation ``op`` had completed when the child was killed at ``kill``."""
    return op < kill[0] or (op == kill[0] and kill[1] == "after")


def kill_runs(make_spec: Callable[[Path], dict], prepare: Callable[[Path], None],
              points: list[tuple[int, str]], work: Path,
              check: Callable[[tuple[int, str], Path, ChildRun], None],
              label: Callable[[tuple[int, str]], str]) -> list[str]:
    """Runs one child per kill point on its own prepared registry, then ``check`` on what it
    left, two at a time; returns every failure, labelled."""
    folders = [work / f"kill-{index:03d}" for index in range(len(points))]
    for folder in folders:
        prepare(folder)

    def one(point_folder) -> str | None:
        point, folder = point_folder
        run = run_child({**make_spec(folder), "kill_at": list(point)}, folder / "run")
        try:
            assert_killed_at(run, point)
            check(point, folder, run)
        except Exception as exc:  # report every kill point, not only the first
            return f"{label(point)}: {type(exc).__name__}: {exc}"
        return None

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return [failure for failure in pool.map(one, zip(points, folders, strict=True)) if failure]


def assert_killed_at(run: ChildRun, point: tuple[int, str]) -> None:
    assert run.returncode == -signal.SIGKILL, (run.returncode, run.stderr[-2000:])
    assert run.trace[-1] == ["KILL", *point], run.trace[-3:]
    if point[1] == "mid" and run.trace[-2][1] == "put_object":  # the child sent half a body
        raise AssertionError(f"no half-sent body before the kill: {run.trace[-3:]}")
    if run.trace[-2][0] == "SENT":
        _, sent, length = run.trace[-2]
        assert 0 < sent < length, run.trace[-2]


# --- the local registry under SIGKILL ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A writer's steps on a prepared registry, and what each committed operation changes."""

    name: str
    kills: int
    prepare: Callable[[Registry, tuple[Path, Path]], None]
    steps: list
    serving: int | None  # serving before the child runs
    canary: int | None  # canary before
    new_serving: int | None  # serving once the SERVING replace is done
    new_canary: int | None  # canary once a CANARY replace is done
    rerun_steps: list = dataclasses.field(default_factory=list)  # before the rerun push


def _first_version(registry, model):
    registry.push(*model, {"writer": "setup"}, expected_serving=None)


def _two_versions(registry, model):
    _first_version(registry, model)
    registry.push(*model, {"writer": "setup"}, expected_serving=1, serve=False)


PUSH_V2 = ["push", {"record": {"writer": "child"}, "expected_serving": 1, "serve": False}]
SCENARIOS = [
    Scenario("first push, serve=True", 24, lambda registry, model: None,
             [["push", {"record": {"writer": "child"}, "expected_serving": None}]],
             None, None, 1, None),
    Scenario("push serve=False, then set_serving", 20, _first_version,
             [PUSH_V2, ["set_serving", 2]], 1, None, 2, None),
    Scenario("start_canary, end_canary(promote=True)", 12, _two_versions,
             [["start_canary", 2, 20], ["end_canary", True]], 1, None, 2, 2,
             [["start_canary", 2, 20], ["end_canary", True]]),
    Scenario("start_canary, end_canary(promote=False)", 10, _two_versions,
             [["start_canary", 2, 20], ["end_canary", False]], 1, None, None, 2,
             [["start_canary", 2, 20], ["end_canary", False]]),
]


def expected_local_state(scenario: Scenario, trace: list[list], kill: tuple[int, str],
                         versions: list[int]) -> dict:
    """Versions, serving and canary that a kill at ``kill`` must leave, from the dry run."""
    state = {"versions": list(versions), "serving": scenario.serving, "canary": scenario.canary}
    for n, kind, path, *_ in trace:
        if not done(n, kill):
            break
        name = os.path.basename(path)
        if kind == "rename" and name.isdigit():
            state["versions"].append(int(name))
        elif kind == "replace" and name == "SERVING":
            state["serving"] = scenario.new_serving
        elif kind == "replace" and name == "CANARY":
            state["canary"] = scenario.new_canary
        elif kind == "unlink" and name == "CANARY":
            state["canary"] = None
    return state


def is_commit(entry: list) -> bool:
    kind, path = entry[1], os.path.basename(entry[2])
    return (kind == "rename" and path.isdigit()) or (
        kind in ("replace", "unlink") and path in ("SERVING", "CANARY"))


def assert_complete(version, model) -> None:
    """The version holds the whole model, the schema and a valid run record."""
    assert (version.model_dir / "saved_model.pb").is_file(), version
    assert tree(version.model_dir) == tree(model[0]), f"version {version.number}: model differs"
    assert version.schema_path.read_bytes() == model[1].read_bytes()
    record = json.loads((version.path / "record.json").read_text())
    assert record["version"] == version.number and record["writer"], record


def check_local(root: Path, model, expected: dict) -> Registry:
    registry = LocalRegistry(root, MODEL_NAME)
    listed = registry.versions()
    assert [v.number for v in listed] == expected["versions"]
    for version in listed:
        assert_complete(version, model)
    serving = registry.serving()
    assert (serving.number if serving else None) == expected["serving"]
    canary = registry.canary()
    assert (canary[0].number if canary else None) == expected["canary"]
    if canary:
        assert canary[0].number in expected["versions"]
    return registry


def test_local_registry_survives_sigkill_at_every_scheduled_point(model, tmp_path):
    counts, kinds = {}, set()
    failures = []
    for index, scenario in enumerate(SCENARIOS):
        template = tmp_path / f"template-{index}"
        scenario.prepare(LocalRegistry(template / "registry", MODEL_NAME), model)
        before = [v.number for v in LocalRegistry(template / "registry", MODEL_NAME).versions()]

        def prepare(folder, template=template):
            if (template / "registry").exists():
                shutil.copytree(template / "registry", folder / "registry")

        def make_spec(folder, scenario=scenario):
            return local_spec(folder / "registry", model, scenario.steps)

        dry_folder = tmp_path / f"dry-{index}"
        prepare(dry_folder)
        dry = run_child(make_spec(dry_folder), dry_folder / "run")
        assert dry.returncode == 0 and all("ok" in r for r in dry.result["results"]), dry
        assert_durable_order(dry.trace)
        points = schedule(dry.trace, scenario.kills, SEED + index, is_commit)
        counts[scenario.name] = len(points)
        kinds.update(dry.trace[n - 1][1] for n, _ in points)

        def check(point, folder, run, scenario=scenario, dry=dry, before=before):
            expected = expected_local_state(scenario, dry.trace, point, before)
            registry = check_local(folder / "registry", model, expected)
            rerun_local_steps(registry, scenario, model, expected)

        def label(point, scenario=scenario, dry=dry):
            n, kind, path, *_ = dry.trace[point[0] - 1]
            return f"{scenario.name}: kill {point[1]} op {n} ({kind} {os.path.basename(path)})"

        failures += kill_runs(make_spec, prepare, points, tmp_path / f"kills-{index}", check,
                              label)
    assert not failures, "\n".join(failures)
    assert sum(counts.values()) >= 50, counts
    assert {"mkdir", "open", "write", "copyfile", "fsync", "rename", "replace", "unlink",
            "flock"} <= kinds, kinds


def rerun_local_steps(registry: Registry, scenario: Scenario, model, expected: dict) -> None:
    """What an operator does after the crash: rerun the canary step, then push the same model
    against what serves now."""
    for step in scenario.rerun_steps:
        if step[0] == "start_canary":
            serving = registry.serving()
            registry.start_canary(step[1], step[2],
                                  expected_serving=serving.number if serving else None)
        elif step[0] == "end_canary":
            ended = registry.end_canary(promote=step[1])
            assert ended.number == (scenario.new_serving if step[1] else scenario.serving)
    serving = registry.serving()
    number = registry.push(*model, {"writer": "rerun"},
                           expected_serving=serving.number if serving else None).number
    assert number == max(v.number for v in registry.versions())
    assert number == max(expected["versions"], default=0) + 1
    assert registry.serving().number == number
    assert_complete(registry.serving(), model)
    leftovers = [p.name for p in registry.path.rglob(".*") if p.name != ".lock"]
    assert leftovers == [], leftovers


def assert_durable_order(trace: list[list]) -> None:
    """Every file and folder a rename/replace publishes is fsynced after its last change and
    before the rename; the folder it lands in is fsynced after it (what a power loss needs)."""
    changed: dict[str, int] = {}  # path -> last write, or last entry created in it (folders)
    for n, kind, path, *rest in trace:
        if kind in ("open", "write", "copyfile"):
            changed[path] = n
        if kind in ("open", "copyfile", "mkdir"):
            changed[os.path.dirname(path)] = n
        if kind in ("rename", "replace"):
            source = rest[0]
            for item, last in changed.items():
                if item == source or item.startswith(source + os.sep):
                    assert any(m > last and k == "fsync" and p == item
                               for m, k, p, *_ in trace[last:n - 1]), (
                        f"{item} not fsynced between op {last} and the {kind} at op {n}")
            assert any(k == "fsync" and p == os.path.dirname(path)
                       for _, k, p, *_ in trace[n:]), f"{os.path.dirname(path)} not fsynced"


# --- the S3 registry under SIGKILL ------------------------------------------------------------

S3_KILLS = 12
S3_LEASE_S = 1.0  # the child's lock lease (renewed every 0.25 s), so a rerun soon takes over


def s3_digests(s3, bucket: str, prefix: str) -> dict[str, str]:
    """The objects under ``prefix``, by key below it, as their MD5 (the ETag of a single PUT)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"][len(prefix):]: o["ETag"].strip('"')
            for page in pages for o in page.get("Contents", [])}


def md5_tree(folder: Path) -> dict[str, str]:
    return {name: hashlib.md5(data).hexdigest() for name, data in tree(folder).items()}


def is_s3_commit(entry: list) -> bool:
    return entry[1] == "delete_object" or entry[2].endswith(("/record.json", "/SERVING", "/.lock"))


def expected_s3_state(trace: list[list], kill: tuple[int, str]) -> dict:
    state = {"versions": [1], "serving": 1, "locked": False}
    for n, kind, key, *_ in trace:
        if not done(n, kill):
            break
        if key.endswith("/record.json"):
            state["versions"].append(int(key.split("/")[-2]))
        elif key.endswith("/SERVING"):
            state["serving"] = 2
        elif key.endswith("/.lock"):
            state["locked"] = kind == "put_object"
    return state


_SESSION = threading.Lock()


def open_s3(uri: str, endpoint: str, cache: Path) -> S3Registry:
    """An S3Registry; built under a lock, as boto3's default session is not thread-safe (its
    clients are)."""
    with _SESSION:
        return S3Registry(uri, MODEL_NAME, endpoint, cache_dir=cache)


def check_s3(s3, bucket: str, uri: str, endpoint: str, cache: Path, model, expected: dict
             ) -> None:
    prefix = f"{uri[len('s3://' + bucket) + 1:]}/{MODEL_NAME}/"
    objects = s3_digests(s3, bucket, prefix)
    reader = open_s3(uri, endpoint, cache / "reader")
    assert [v.number for v in reader.versions()] == expected["versions"]
    wanted = {f"model/{name}": digest for name, digest in md5_tree(model[0]).items()}
    wanted["schema.pbtxt"] = hashlib.md5(model[1].read_bytes()).hexdigest()
    for number in expected["versions"]:
        base = f"versions/{number}/"
        stored = {k[len(base):]: v for k, v in objects.items() if k.startswith(base)}
        assert stored.pop("record.json") and stored == wanted, f"version {number} differs"
        record = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}{base}record.json")[
            "Body"].read())
        assert record["version"] == number and record["writer"], record
    serving = reader.serving()
    assert serving.number == expected["serving"]
    assert tree(serving.model_dir) == tree(model[0])
    assert (".lock" in objects) == expected["locked"]
    # A rerun: it waits out a killed push's lock, and never reuses a number any object has.
    used = {int(k.split("/")[1]) for k in objects if k.startswith("versions/")}
    number = reader.push(*model, {"writer": "rerun"}, expected_serving=expected["serving"],
                         lock_timeout_s=S3_LEASE_S + 10).number
    assert number == max(used) + 1
    assert [v.number for v in reader.versions()] == [*expected["versions"], number]
    pointer = s3.get_object(Bucket=bucket, Key=f"{prefix}SERVING")["Body"].read()
    assert json.loads(pointer)["version"] == number
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}.lock")
    # What the killed push left incomplete is gone: every version object is a complete one's.
    left = {int(k.split("/")[1]) for k in s3_digests(s3, bucket, prefix)
            if k.startswith("versions/")}
    assert left == {*expected["versions"], number}


def test_s3_registry_survives_sigkill_at_every_scheduled_point(model, s3_bucket, tmp_path):
    s3 = boto3.client("s3", endpoint_url=s3_bucket.endpoint_url)
    bucket = s3_bucket.uri[len("s3://"):]

    def uri(folder: Path) -> str:
        return f"{s3_bucket.uri}/{folder.parent.name}-{folder.name}"

    def prepare(folder: Path) -> None:
        open_s3(uri(folder), s3_bucket.endpoint_url, folder / "setup").push(
            *model, {"writer": "setup"}, expected_serving=None)

    def make_spec(folder: Path) -> dict:
        return {"kind": "s3", "root": uri(folder), "model_name": MODEL_NAME,
                "endpoint": s3_bucket.endpoint_url, "cache": str(folder / "child"),
                "lease_s": S3_LEASE_S, "model": str(model[0]), "schema": str(model[1]),
                "steps": [["push", {"record": {"writer": "child"}, "expected_serving": 1}]]}

    dry_folder = tmp_path / "dry"
    prepare(dry_folder)
    dry = run_child(make_spec(dry_folder), dry_folder / "run")
    assert dry.returncode == 0 and dry.result["results"] == [{"ok": 2}], dry
    points = schedule(dry.trace, S3_KILLS, SEED + 100, is_s3_commit)

    def check(point, folder, run):
        check_s3(s3, bucket, uri(folder), s3_bucket.endpoint_url, folder, model,
                 expected_s3_state(dry.trace, point))

    def label(point):
        n, kind, key, *_ = dry.trace[point[0] - 1]
        return f"S3 push: kill {point[1]} op {n} ({kind} {key.split('/', 2)[-1]})"

    failures = kill_runs(make_spec, prepare, points, tmp_path / "kills", check, label)
    assert not failures, "\n".join(failures)
    assert {p[1] for p in points} == {"before", "mid", "after"}


def test_s3_lock_left_by_a_killed_push_holds_until_its_lease_expires(model, s3_bucket,
                                                                     tmp_path):
    """A push killed while it holds the S3 lock leaves it until its lease (LOCK_LEASE_S, a
    minute, which a live holder renews) runs out: a rerun within it is refused, as for a live
    run, and says until when."""
    uri = f"{s3_bucket.uri}/lease"
    spec = {"kind": "s3", "root": uri, "model_name": MODEL_NAME,
            "endpoint": s3_bucket.endpoint_url, "cache": str(tmp_path / "child"),
            "model": str(model[0]), "schema": str(model[1]), "kill_at": [1, "after"],
            "steps": [["push", {"record": {"writer": "child"}, "expected_serving": None}]]}
    run = run_child(spec, tmp_path / "run")
    assert_killed_at(run, (1, "after"))
    assert run.trace[0][1:3] == ["put_object", f"lease/{MODEL_NAME}/.lock"]
    lock = json.loads(boto3.client("s3", endpoint_url=s3_bucket.endpoint_url).get_object(
        Bucket=s3_bucket.uri[len("s3://"):], Key=f"lease/{MODEL_NAME}/.lock")["Body"].read())
    assert 50 < lock["expires_unix"] - time.time() <= 60
    rerun = open_s3(uri, s3_bucket.endpoint_url, tmp_path / "rerun")
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(lock["expires_unix"]))
    with pytest.raises(RegistryError, match=rf"is locked by another run for over 1s .*held "
                                            rf"until {until}\); wait for that run to finish"):
        rerun.push(*model, {"writer": "rerun"}, expected_serving=None, lock_timeout_s=1)
    assert rerun.versions() == []


def test_s3_lock_left_by_a_killed_push_is_taken_over_once_its_lease_ends(model, s3_bucket,
                                                                          tmp_path):
    """The same kill with a one-second lease the child renewed: a rerun waits until the lease
    ends (not longer), takes the lock over, and pushes version 1."""
    uri = f"{s3_bucket.uri}/takeover"
    spec = {"kind": "s3", "root": uri, "model_name": MODEL_NAME,
            "endpoint": s3_bucket.endpoint_url, "cache": str(tmp_path / "child"),
            "lease_s": S3_LEASE_S, "model": str(model[0]), "schema": str(model[1]),
            "kill_at": [3, "before"],
            "steps": [["push", {"record": {"writer": "child"}, "expected_serving": None}]]}
    run = run_child(spec, tmp_path / "run")
    assert_killed_at(run, (3, "before"))  # lock taken, part of the model uploaded
    s3 = boto3.client("s3", endpoint_url=s3_bucket.endpoint_url)
    bucket = s3_bucket.uri[len("s3://"):]
    lock = json.loads(s3.get_object(Bucket=bucket, Key=f"takeover/{MODEL_NAME}/.lock")[
        "Body"].read())
    rerun = open_s3(uri, s3_bucket.endpoint_url, tmp_path / "rerun")
    assert rerun.push(*model, {"writer": "rerun"}, expected_serving=None,
                      lock_timeout_s=10).number == 2
    assert lock["expires_unix"] <= time.time() < lock["expires_unix"] + 2
    assert [v.number for v in rerun.versions()] == [2]
    assert {k.split("/")[1] for k in s3_digests(s3, bucket, f"takeover/{MODEL_NAME}/")
            if k.startswith("versions/")} == {"2"}  # the killed push's objects deleted


# --- two writers at once -----------------------------------------------------------------------


def writer_models(model, folder: Path) -> dict[str, tuple[Path, Path]]:
    """Each writer's own copy of the model, marked with its name, so a version built from two
    writers' files would show."""
    models = {}
    for name in ("a", "b"):
        shutil.copytree(model[0], folder / name / "model")
        (folder / name / "model" / "WRITER").write_text(name)
        models[name] = (folder / name / "model", model[1])
    return models


def race(specs: dict[str, dict], work: Path) -> dict[str, ChildRun]:
    """Starts one child per spec, lets them all go at once (a start file), waits for them."""
    start = work / "start"
    processes = {name: start_child({**spec, "ready": str(work / f"ready-{name}"),
                                    "start": str(start)}, work / name)
                 for name, spec in specs.items()}
    try:
        wait_for(lambda: all((work / f"ready-{name}").exists() for name in specs),
                 "writers ready")
    finally:
        start.touch()
    return {name: finish_child(process, work / name) for name, process in processes.items()}


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = CHILD_TIMEOUT_S
             ) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
        time.sleep(0.01)


def assert_one_winner(runs: dict[str, ChildRun]) -> str:
    assert all(run.returncode == 0 for run in runs.values()), runs
    outcomes = {name: run.result["results"][0] for name, run in runs.items()}
    winners = [name for name, outcome in outcomes.items() if outcome == {"ok": 1}]
    assert len(winners) == 1, outcomes
    (loser,) = set(outcomes) - set(winners)
    assert outcomes[loser]["error"] == "StaleBaselineError", outcomes
    assert re.search(r"now serves version 1, not version None the model was evaluated against; "
                     r"rerun to evaluate against the new serving model$",
                     outcomes[loser]["message"]), outcomes[loser]
    return winners[0]


def test_two_local_writers_at_once_one_version_the_loser_told_to_rerun(model, tmp_path):
    models = writer_models(model, tmp_path)
    for attempt in range(3):
        root = tmp_path / f"attempt-{attempt}" / "registry"
        runs = race({name: local_spec(root, models[name], [["push", {
            "record": {"writer": name}, "expected_serving": None}]]) for name in models},
            tmp_path / f"attempt-{attempt}")
        winner = assert_one_winner(runs)
        registry = LocalRegistry(root, MODEL_NAME)
        assert [v.number for v in registry.versions()] == [1]
        assert registry.serving().number == 1
        assert registry.serving().record()["writer"] == winner
        assert tree(registry.serving().model_dir) == tree(models[winner][0])
        assert not list(registry.path.glob("versions/.staging-*"))


def test_two_local_writers_rerunning_on_stale_baselines_interleave_no_version(model,
                                                                              tmp_path):
    models = writer_models(model, tmp_path)
    root = tmp_path / "registry"
    runs = race({name: local_spec(root, models[name], [["push_until", {
        "record": {"writer": name}, "count": 3}]]) for name in models}, tmp_path / "race")
    pushed = {name: run.result["results"][0]["ok"] for name, run in runs.items()}
    assert sorted(pushed["a"] + pushed["b"]) == [1, 2, 3, 4, 5, 6], pushed
    registry = LocalRegistry(root, MODEL_NAME)
    assert [v.number for v in registry.versions()] == [1, 2, 3, 4, 5, 6]
    for version in registry.versions():
        writer = version.record()["writer"]
        assert version.number in pushed[writer]
        assert tree(version.model_dir) == tree(models[writer][0]), version
    assert registry.serving().number == 6


def test_local_writer_that_cannot_get_the_lock_in_time_is_told_to_wait_and_rerun(model,
                                                                                tmp_path):
    models = writer_models(model, tmp_path)
    root, work = tmp_path / "registry", tmp_path / "runs"
    holding, release = work / "holding", work / "release"
    holder = start_child(local_spec(root, models["a"], [["push", {
        "record": {"writer": "a"}, "expected_serving": None}]],
        pause={"kind": "flock", "signal": str(holding), "until": str(release)}), work / "a")
    try:
        wait_for(lambda: holding.exists() or holder.poll() is not None, "lock held")
        loser = run_child(local_spec(root, models["b"], [["push", {
            "record": {"writer": "b"}, "expected_serving": None, "lock_timeout_s": 1}]]),
            work / "b")
    finally:
        release.touch()
    assert finish_child(holder, work / "a").result["results"] == [{"ok": 1}]
    (outcome,) = loser.result["results"]
    assert outcome["error"] == "RegistryError", outcome
    assert re.search(r"is locked by another run for over 1s; wait for that run to finish, "
                     r"then rerun$", outcome["message"]), outcome
    registry = LocalRegistry(root, MODEL_NAME)
    assert [v.number for v in registry.versions()] == [1]
    # The rerun, against what serves now.
    assert registry.push(*models["b"], {"writer": "b"}, expected_serving=1).number == 2
    assert [v.record()["writer"] for v in registry.versions()] == ["a", "b"]


# Two whole CT runs at once: `ctloop run --local` twice, as two processes, on one registry. Each
# run's rollout task waits at its push (a start file, as for the writers above) until both are
# there, so both have been evaluated against no serving model, then both push. The push that
# wins returns and lingers HOLD_S, as a process the machine preempts between its push and what
# follows would; the other must not slip a second version in meanwhile.
PUSH_GATE = '''\
import os
import time

_gate = os.environ.get("CTLOOP_TEST_PUSH_GATE")
if _gate:
    try:
        from ctloop import registry as _registry
    except ImportError:  # a python without ctloop
        _registry = None
    if _registry is not None:
        _push = _registry.LocalRegistry.push

        def _gated_push(self, *args, **kwargs):
            open(os.path.join(_gate, "ready-" + os.environ["CTLOOP_TEST_RUN"]), "w").close()
            deadline = time.monotonic() + 600
            while (not os.path.exists(os.path.join(_gate, "start"))
                   and time.monotonic() < deadline):
                time.sleep(0.01)
            version = _push(self, *args, **kwargs)
            time.sleep(float(os.environ["CTLOOP_TEST_HOLD_S"]))
            return version

        _registry.LocalRegistry.push = _gated_push
'''
HOLD_S = 1.0
RUN_TIMEOUT_S = 900.0


@pytest.mark.local
def test_two_whole_ct_runs_at_once_push_one_version_the_loser_told_to_rerun(serving_python,
                                                                            tmp_path):
    from ctloop.data import datagen

    datagen.write_spans(tmp_path / "data", 1, rows=1000)
    hook, gate, registry_root = tmp_path / "hook", tmp_path / "gate", tmp_path / "registry"
    hook.mkdir()
    gate.mkdir()
    (hook / "sitecustomize.py").write_text(PUSH_GATE)
    epochs = {"a": 4, "b": 5}  # both bless; the version's record and model tell whose it is
    processes = {}
    for name in epochs:
        work = tmp_path / name
        work.mkdir()
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "CTLOOP_TEST_PUSH_GATE": str(gate),
               "CTLOOP_TEST_RUN": name, "CTLOOP_TEST_HOLD_S": str(HOLD_S),
               "CTLOOP_SERVING_PYTHON": serving_python,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(hook),
                                                           os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "ctloop.cli", "run", "--local",
                   "--data", str(tmp_path / "data" / "span-1"), "--label", datagen.LABEL,
                   "--exclude", datagen.ID_COLUMN, "--model-name", MODEL_NAME,
                   "--epochs", str(epochs[name]), "--max-p99-ms", "5000", "--min-rps", "1",
                   "--workdir", str(work / "workdir"), "--registry", str(registry_root),
                   "--summary", str(work / "summary.json"), "--log", str(work / "log.txt"),
                   # The race is for production, which a run moves only when told to.
                   "--release-stage", "production"]
        with open(work / "stdout", "w") as out, open(work / "stderr", "w") as err:
            processes[name] = subprocess.Popen(command, env=env, stdout=out, stderr=err)
    try:
        wait_for(lambda: all((gate / f"ready-{name}").exists() for name in epochs)
                 or any(p.poll() is not None for p in processes.values()),
                 "both runs at their push", RUN_TIMEOUT_S)
    finally:
        (gate / "start").touch()
        try:
            codes = {name: p.wait(RUN_TIMEOUT_S) for name, p in processes.items()}
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
    runs = {name: {"code": codes[name],
                   "stdout": (tmp_path / name / "stdout").read_text(),
                   "stderr": (tmp_path / name / "stderr").read_text()} for name in epochs}
    assert codes == {"a": 0, "b": 0}, runs
    summaries = {name: json.loads((tmp_path / name / "summary.json").read_text())
                 for name in epochs}
    for summary in summaries.values():  # both judged against no serving model: they overlapped
        assert summary["blessed"] and summary["infra_blessed"], summary
        assert summary["baseline_version"] is None, summary
    winners = [name for name, summary in summaries.items() if summary["pushed"]]
    assert len(winners) == 1, {n: s["push_reason"] for n, s in summaries.items()}
    (winner,), (loser,) = winners, set(epochs) - set(winners)
    won, lost = summaries[winner], summaries[loser]
    assert won["pushed_version"] == 1 and won["promoted"], won["push_reason"]
    assert lost["pushed_version"] is None and not lost["promoted"]
    stale = (f"registry {registry_root / MODEL_NAME} now serves version 1, not version None the "
             "model was evaluated against; rerun to evaluate against the new serving model")
    assert lost["push_reason"] == stale
    assert f"rollout: {stale}" in runs[loser]["stdout"].splitlines(), runs[loser]

    registry = LocalRegistry(registry_root, MODEL_NAME)
    assert [v.number for v in registry.versions()] == [1]
    assert json.loads((registry.path / "SERVING").read_text())["version"] == 1
    assert registry.serving().number == 1 and registry.canary() is None
    # Version 1 is the winner's push, every file of it: record, model and schema.
    version = registry.versions()[0]
    record = version.record()
    assert record["parameters"]["epochs"] == epochs[winner]
    assert record["metrics"] == won["metrics"] != lost["metrics"]
    assert record["infra"]["p99_ms"] == won["infra"]["p99_ms"]
    assert (record["files"], record["data_fingerprint"]) == (won["files"],
                                                             won["data_fingerprint"])
    assert record["baseline_version"] is None and record["previous_version"] is None
    run_dir = Path(won["run_dir"])
    assert tree(version.model_dir) == tree(run_dir / "train" / "model")
    assert version.schema_path.read_bytes() == (
        run_dir / "validate-data" / "schema" / "schema.pbtxt").read_bytes()
    # Nothing half-done is left: no staging folder, no temporary pointer or statistics file.
    assert {p.name for p in registry.path.iterdir()} == {".lock", "SERVING", "statistics",
                                                         "versions"}
    assert [p.name for p in (registry.path / "versions").iterdir()] == ["1"]
    assert [p.name for p in (registry.path / "statistics").iterdir()] == [
        "span-1.stats.tfrecord"]


@pytest.fixture
def atomic_conditional_puts(monkeypatch):
    """moto checks If-None-Match and then stores, unlocked, so two PUTs at once can both
    create the key; S3 (and MinIO, SeaweedFS) decide them atomically. Serialize moto's PUT
    handling so the fake keeps the promise the lock relies on."""
    from moto.s3.responses import S3Response

    put_object, lock = S3Response.put_object, threading.Lock()

    def atomic(self, *args, **kwargs):
        with lock:
            return put_object(self, *args, **kwargs)

    monkeypatch.setattr(S3Response, "put_object", atomic)


def test_two_s3_writers_at_once_one_version_the_loser_told_to_rerun(
        model, s3_bucket, tmp_path, atomic_conditional_puts):
    models = writer_models(model, tmp_path)
    uri = f"{s3_bucket.uri}/race"
    runs = race({name: {"kind": "s3", "root": uri, "model_name": MODEL_NAME,
                        "endpoint": s3_bucket.endpoint_url, "cache": str(tmp_path / name / "c"),
                        "model": str(models[name][0]), "schema": str(model[1]),
                        "steps": [["push", {"record": {"writer": name},
                                            "expected_serving": None}]]}
                 for name in models}, tmp_path / "race")
    winner = assert_one_winner(runs)
    reader = open_s3(uri, s3_bucket.endpoint_url, tmp_path / "reader")
    assert [v.number for v in reader.versions()] == [1]
    assert reader.serving().record()["writer"] == winner
    objects = s3_digests(boto3.client("s3", endpoint_url=s3_bucket.endpoint_url),
                         s3_bucket.uri[len("s3://"):], f"race/{MODEL_NAME}/versions/1/model/")
    assert objects == md5_tree(models[winner][0])


def test_s3_writer_that_cannot_get_the_lock_in_time_is_told_to_wait_and_rerun(
        model, s3_bucket, tmp_path):
    models = writer_models(model, tmp_path)
    uri, work = f"{s3_bucket.uri}/locked", tmp_path / "runs"
    holding, release = work / "holding", work / "release"

    def spec(name, **options):
        return {"kind": "s3", "root": uri, "model_name": MODEL_NAME,
                "endpoint": s3_bucket.endpoint_url, "cache": str(tmp_path / name / "c"),
                "model": str(models[name][0]), "schema": str(model[1]),
                "steps": [["push", {"record": {"writer": name}, "expected_serving": None,
                                    **options}]]}

    holder = start_child({**spec("a"), "pause": {"kind": "put_object", "signal": str(holding),
                                                 "until": str(release)}}, work / "a")
    try:
        wait_for(lambda: holding.exists() or holder.poll() is not None, "lock held")
        loser = run_child(spec("b", lock_timeout_s=1), work / "b")
    finally:
        release.touch()
    assert finish_child(holder, work / "a").result["results"] == [{"ok": 1}]
    (outcome,) = loser.result["results"]
    assert outcome["error"] == "RegistryError", outcome
    assert re.search(r"is locked by another run for over 1s \(locked/churn/\.lock, held until "
                     r"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC\); wait for that run to finish, then "
                     r"rerun \(a killed run's lock frees itself then\)$",
                     outcome["message"]), outcome
    registry = open_s3(uri, s3_bucket.endpoint_url, tmp_path / "rerun")
    assert registry.push(*models["b"], {"writer": "b"}, expected_serving=1).number == 2
    assert [registry.versions()[i].number for i in (0, 1)] == [1, 2]


# --- the model server killed mid-traffic --------------------------------------------------------


@pytest.mark.serving
def test_model_server_killed_mid_traffic_answers_the_same_after_restart(model, serving_python,
                                                                        tmp_path):
    registry = LocalRegistry(tmp_path / "registry", MODEL_NAME)
    registry.push(*model, {"writer": "setup"}, expected_serving=None)
    port = server_process.free_port()
    answers: list[tuple[str, dict | str]] = []  # (phase, answer or error), in order
    phase, stop = ["before"], threading.Event()

    def traffic(url: str) -> None:
        while not stop.is_set():
            try:
                answers.append((phase[0], client.predict_raw(url, MODEL_NAME, ROWS, 5.0)))
            except (CtloopError, OSError, http.client.HTTPException) as exc:
                # The client wraps refused connections, not one the server dropped as it died
                answers.append((phase[0], f"{type(exc).__name__}: {exc}"))
                time.sleep(0.05)

    with server_process.serve(serving_python, MODEL_NAME, registry=str(registry.root),
                              port=port) as server:
        server.wait_ready(MODEL_NAME, 120)
        before = client.predict_raw(server.url, MODEL_NAME, ROWS)
        sender = threading.Thread(target=traffic, args=(server.url,), daemon=True)
        sender.start()
        wait_for(lambda: sum(isinstance(a, dict) for _, a in answers) >= 20, "traffic", 30)
        server.process.send_signal(signal.SIGKILL)
        assert server.process.wait(30) == -signal.SIGKILL
        phase[0] = "down"
    try:
        with server_process.serve(serving_python, MODEL_NAME, registry=str(registry.root),
                                  port=port) as server:
            server.wait_ready(MODEL_NAME, 120)
            phase[0] = "restarted"
            after = client.predict_raw(server.url, MODEL_NAME, ROWS)
            wait_for(lambda: sum(p == "restarted" and isinstance(a, dict)
                                 for p, a in answers) >= 5, "traffic after the restart", 30)
    finally:
        stop.set()
        sender.join(10)
    assert after == before and before["model_version"] == "1"
    assert any(p == "down" and isinstance(a, str) for p, a in answers)  # the outage was seen
    # Every answer, before the kill and after the restart, is the same; none is wrong.
    assert all(a == before for _, a in answers if isinstance(a, dict)), answers
