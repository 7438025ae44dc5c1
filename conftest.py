"""Fixtures shared by tests/ and components/*/tests/: generated data and the artifacts the
pipeline's first steps produce from it, built once per session with the real libraries, and
S3 and GCS servers on 127.0.0.1 to read data from."""

from __future__ import annotations

import atexit
import dataclasses
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ctloop import datagen

LABEL = datagen.LABEL
EXCLUDE = [datagen.ID_COLUMN]
# The S3 test server's secret: tests check it never reaches an output, a record or a log.
S3_TEST_SECRET = "ctloop-test-secret-4f1c9a"


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


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A fresh bucket on an object-store server on 127.0.0.1, and a way to write objects to it."""

    uri: str  # s3://NAME or gs://NAME
    endpoint_url: str
    put: Callable[[str, bytes], None]  # (key, content)


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

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ctloop-test-key-id")
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
