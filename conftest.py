"""Fixtures shared by tests/ and components/*/tests/: generated data and the artifacts the
pipeline's first steps produce from it, built once per session with the real libraries, and
S3 and GCS servers on 127.0.0.1 to read data from."""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ctloop.data import datagen

LABEL = datagen.LABEL
EXCLUDE = [datagen.ID_COLUMN]
# The S3 test server's credentials: tests check they never reach an output, a record or a log.
S3_TEST_SECRET = "ctloop-test-secret-4f1c9a"
S3_TEST_KEY_ID = "ctloop-test-key-id"


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What select_span -> ingest -> validate_data -> train make of span 1 of generated data."""

    data_dir: Path
    train: Path
    eval: Path
    schema: Path
    model_dir: Path
    features: list


SERVING_PYTHON_ENV = "CTLOOP_SERVING_PYTHON"
DEFAULT_SERVING_PYTHON = Path(__file__).resolve().parent / ".venv" / "serving" / "bin" / "python"


def child_pids(marker: bytes = b"") -> list[int]:
    """The pids of this process's running children (zombies excluded) whose command line
    contains ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            status = (proc / "status").read_text()
            command = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if (int(fields["PPid"]) == os.getpid() and not fields["State"].strip().startswith("Z")
                and marker in command):
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="session")
def serving_python() -> str:
    """The python of the serving environment (kserve 0.21 + TF), or skip."""
    python = os.environ.get(SERVING_PYTHON_ENV)
    if python:
        return python
    if not DEFAULT_SERVING_PYTHON.exists():
        pytest.skip(
            f"no serving environment: set {SERVING_PYTHON_ENV} to the python of an env with "
            f"kserve 0.21 and tensorflow ({DEFAULT_SERVING_PYTHON} does not exist)"
        )
    return str(DEFAULT_SERVING_PYTHON)


def validate_outputs(folder: Path):
    """validate_data's output paths inside ``folder``."""
    from ctloop.components.validate_data.logic import OutputPaths

    return OutputPaths(str(folder / "stats"), str(folder / "schema.pbtxt"),
                       str(folder / "anomalies"), str(folder / "stats.html"),
                       str(folder / "drift.html"), str(folder / "anomalies.md"))


def evaluate_outputs(folder: Path) -> dict:
    """The evaluate component's output artifacts, inside ``folder``."""
    from kfp.dsl import Artifact, ClassificationMetrics, Markdown, Metrics

    return {
        "blessing": Artifact(uri=str(folder / "blessing")),
        "evaluation": Artifact(uri=str(folder / "evaluation")),
        "metrics": Metrics(uri=str(folder / "metrics")),
        "classification_metrics": ClassificationMetrics(uri=str(folder / "classification")),
        "report": Markdown(uri=str(folder / "report.md")),
    }


@pytest.fixture(scope="session")
def spans_dir(tmp_path_factory) -> Path:
    """Spans 1-2 (clean), span 3 with 5% corrupt rows, as CSV, 3000 rows each."""
    out = tmp_path_factory.mktemp("data")
    datagen.write_spans(out, 2, rows=3000)
    datagen.write_spans(out, 1, first_span=3, rows=3000, corrupt=0.05)
    return out


@pytest.fixture(scope="session")
def prepared(spans_dir, tmp_path_factory) -> Prepared:
    from ctloop.components.ingest import logic as ingest
    from ctloop.components.select_span import logic as select_span
    from ctloop.components.train import logic as train
    from ctloop.components.validate_data import logic as validate

    work = tmp_path_factory.mktemp("prepared")
    selected = select_span.run(str(spans_dir / "span-1"))
    ingest.run(selected.files, selected.fingerprint, selected.spans, LABEL, EXCLUDE, 20,
               str(work / "train.parquet"), str(work / "eval.parquet"))
    validate.run(str(work / "train.parquet"), str(work / "eval.parquet"), 1, LABEL, EXCLUDE,
                 None, None, None, validate_outputs(work))
    result = train.run(str(work / "train.parquet"), str(work / "eval.parquet"),
                       str(work / "schema.pbtxt"), LABEL, EXCLUDE,
                       train.Hyperparameters(epochs=4), str(work / "model"))
    return Prepared(spans_dir, work / "train.parquet", work / "eval.parquet",
                    work / "schema.pbtxt", work / "model", result.features)


# The other task types, on the same generated rows: the plan sets the base of the monthly charge,
# so the charge tells the plan (multiclass) and the plan the charge (regression), up to noise.
TASK_LABELS = {"multiclass": "plan", "regression": "monthly_charges"}


@dataclasses.dataclass(frozen=True)
class TaskData:
    """``prepared``'s splits with another task's label, and a model trained on them."""

    task: str
    label: str
    exclude: list[str]
    train: Path
    eval: Path
    classes: list[str]
    model_dir: Path
    result: object  # train's TrainResult


@pytest.fixture(scope="session")
def task_data(prepared, tmp_path_factory) -> dict[str, TaskData]:
    """Per task type other than binary: the splits relabeled as ingest encodes them, and a model
    trained on them (8 epochs)."""
    import pandas as pd

    from ctloop.components.ingest.logic import encode_label
    from ctloop.components.train import logic as train

    made = {}
    for task, label in TASK_LABELS.items():
        work = tmp_path_factory.mktemp(task)
        for name, path in (("train", prepared.train), ("eval", prepared.eval)):
            frame = pd.read_parquet(path)
            frame[label], classes = encode_label(frame, label, task)
            frame.to_parquet(work / f"{name}.parquet", index=False)
        exclude = [*EXCLUDE, LABEL]
        result = train.run(str(work / "train.parquet"), str(work / "eval.parquet"),
                           str(prepared.schema), label, exclude,
                           train.Hyperparameters(epochs=8, seed=7), str(work / "model"),
                           label_classes=classes, task=task)
        made[task] = TaskData(task, label, exclude, work / "train.parquet",
                              work / "eval.parquet", classes, work / "model", result)
    return made


def export_nan_model(prepared: Prepared, target: Path) -> None:
    """A SavedModel with ``prepared``'s features and signature that answers NaN for every row."""
    import tensorflow as tf

    from ctloop import contract

    features = json.loads((prepared.model_dir / contract.FEATURES_FILE).read_text())
    spec = {f["name"]: tf.TensorSpec([None], tf.float32 if f["dtype"] == "float32" else tf.string,
                                     name=f["name"]) for f in features["features"]}

    class NaNModel(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, raw):
            rows = tf.shape(raw[next(iter(spec))])[0]
            return {contract.OUTPUT_KEYS[contract.BINARY]: tf.fill([rows], float("nan"))}

    model = NaNModel()
    tf.saved_model.save(model, str(target), signatures={"serving_default": model.serve})
    (target / contract.FEATURES_FILE).write_text(json.dumps(features))


@dataclasses.dataclass(frozen=True)
class ServedRegistry:
    """A registry serving ``prepared``'s model as version 1, a model server following it, and
    that server's answer to a few eval rows, taken before any test used the registry."""

    registry: object  # ctloop.registry.Registry
    url: str
    rows: list[dict]
    reference: dict  # the whole V1 answer: predictions and model_version

    def assert_answers_as_before(self) -> None:
        from ctloop.serving import client

        answer = client.predict_raw(self.url, "churn", self.rows)
        assert answer == self.reference, (answer, self.reference)


@pytest.fixture(scope="session")
def served_registry(prepared, serving_python, tmp_path_factory) -> Iterator[ServedRegistry]:
    """One `ctloop serve --registry` for the bad-input corpus (tests/test_bad_*.py), whose
    cases run against this registry: after each, the server must answer as before."""
    import pandas as pd

    from ctloop.registry import LocalRegistry
    from ctloop.serving import client
    from ctloop.serving import process as server_process

    registry = LocalRegistry(tmp_path_factory.mktemp("served") / "registry", "churn")
    registry.push(prepared.model_dir, prepared.schema, {"span": 1}, expected_serving=None)
    frame = pd.read_parquet(prepared.eval).head(5)
    rows = json.loads(frame[[f.name for f in prepared.features]].to_json(orient="records"))
    with server_process.serve(serving_python, "churn", registry=str(registry.root)) as server:
        server.wait_ready("churn", 120)
        reference = client.predict_raw(server.url, "churn", rows)
        assert reference["model_version"] == "1" and len(reference["predictions"]) == len(rows)
        yield ServedRegistry(registry, server.url, rows, reference)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A fresh bucket on an object-store server on 127.0.0.1, and a way to write objects to it."""

    uri: str  # s3://NAME or gs://NAME
    endpoint_url: str
    put: Callable[[str, bytes], None]  # (key, content)


@pytest.fixture
def cli():
    """``ctloop`` through click's runner: ``cli("run", ...)`` returns the result. Any existing
    python passes the serving-python check; tests using it stop before a server starts."""
    from click.testing import CliRunner

    from ctloop.cli import main

    runner = CliRunner(env={"CTLOOP_SERVING_PYTHON": sys.executable})

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args])

    return invoke


# A KFP API for the e2e tests; none reachable: they skip, saying where they looked.
KFP_HOST = os.environ.get("KFP_HOST", "http://localhost:8080")


@pytest.fixture(scope="session")
def kfp_client():
    """A ``kfp.Client`` of the API at ``$KFP_HOST`` (token from ``KFP_TOKEN``), or a skip."""
    import urllib.request

    from ctloop.kfp import api as kfp_api

    try:
        with urllib.request.urlopen(f"{KFP_HOST}/apis/v2beta1/healthz", timeout=3) as answer:
            reachable = answer.status == 200
    except OSError:
        reachable = False
    if not reachable:
        pytest.skip(f"no KFP API reachable at {KFP_HOST} (set KFP_HOST; `make kind-up` starts "
                    "one)")
    return kfp_api.connect(KFP_HOST, os.environ.get("KFP_TOKEN"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server (a real S3-protocol HTTP server) on 127.0.0.1, for the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch, tmp_path) -> Bucket:
    """A new bucket on the S3 server; boto3's standard chain finds test credentials in the env."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_TEST_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_TEST_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # Nothing from this machine's AWS configuration may leak in, the endpoint least of all:
    # it must come from s3_endpoint_url.
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    name = f"ctloop-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    return Bucket(f"s3://{name}", s3_endpoint,
                  lambda key, content: client.put_object(Bucket=name, Key=key, Body=content))


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """gcp-storage-emulator (a GCS JSON-API HTTP server, in memory) on 127.0.0.1."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs_bucket(gcs_endpoint, monkeypatch) -> Bucket:
    """A new bucket on the GCS emulator, which google-cloud-storage reaches through its own
    STORAGE_EMULATOR_HOST setting (anonymous credentials)."""
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    name = f"ctloop-{uuid.uuid4().hex[:12]}"
    bucket = storage.Client().create_bucket(name)
    return Bucket(f"gs://{name}", gcs_endpoint,
                  lambda key, content: bucket.blob(key).upload_from_string(content))


def _drop_tensorflow_shutdown_noise() -> None:
    # TFMA keeps loaded models in Beam's shared handles until interpreter shutdown, where
    # TensorFlow 2.16's AtomicFunction.__del__ fails once module globals are gone and prints
    # "Exception ignored in ..." after pytest's summary, once per function. Drop exactly that
    # report; every other one still reaches stderr. Installed at exit, after pytest has restored
    # its own hook; binds what it uses, since module globals are cleared by the time it runs.
    def hook(unraisable, default=sys.unraisablehook, describe=repr):
        if "AtomicFunction.__del__" not in describe(unraisable.object):
            default(unraisable)

    sys.unraisablehook = hook


atexit.register(_drop_tensorflow_shutdown_noise)
