"""A server following a registry keeps serving what it has through anything the registry throws
at it: a pointer it cannot read, a version that does not load. It says why once per change, in
its log and on /metrics, and follows again as soon as the registry makes sense. It follows a
registry on S3 as it follows a folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from ctloop.registry import LocalRegistry, S3Registry
from ctloop.serving import client
from ctloop.serving import process as server_process

pytestmark = pytest.mark.serving
DEADLINE_S = 60.0


@pytest.fixture
def rows(prepared) -> list[dict]:
    frame = pd.read_parquet(prepared.eval).head(5)
    return json.loads(frame[[f.name for f in prepared.features]].to_json(orient="records"))


def metric(url: str, name: str) -> float | None:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"not seen within {DEADLINE_S:.0f} s: {what}")


def unloadable_copy(model_dir: Path, target: Path) -> Path:
    """The model with a saved_model.pb that parses but names outputs its functions do not have:
    loading it fails with a KeyError deep in TensorFlow, not with any error ctloop expects."""
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(model_dir, target)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((target / "saved_model.pb").read_bytes())
    for function in saved.meta_graphs[0].graph_def.library.function:
        for key in function.ret:
            function.ret[key] = "missing_node:output:0"
    (target / "saved_model.pb").write_bytes(saved.SerializeToString())
    return target


def test_the_follower_survives_what_it_cannot_follow_and_says_so_once(
        prepared, serving_python, rows, tmp_path):
    registry = LocalRegistry(tmp_path / "registry", "churn")
    registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=None)
    log = tmp_path / "server.log"
    with server_process.serve(serving_python, "churn", registry=str(registry.root),
                              log_path=str(log)) as server:
        server.wait_ready("churn", 120)
        before = client.predict_raw(server.url, "churn", rows)
        assert before["model_version"] == "1"

        def failures() -> float:
            return metric(server.url, "ctloop_registry_follow_failures_total") or 0.0

        def not_followed() -> list[str]:
            return [line for line in log.read_text().splitlines() if "not followed" in line]

        # A pointer without a version: every poll fails the same way; one line says why.
        (registry.path / "SERVING").write_text(json.dumps({"updated_unix": 1}))
        wait_until(lambda: failures() >= 3, "three failed polls")
        assert client.predict_raw(server.url, "churn", rows) == before
        assert metric(server.url, "ctloop_registry_follow_failing") == 1
        (line,) = not_followed()
        assert "SERVING" in line and "names no version" in line, line
        # Repaired: followed again, said once.
        registry.set_serving(1)
        wait_until(lambda: metric(server.url, "ctloop_registry_follow_failing") == 0,
                   "followed again")
        assert sum("followed again" in line for line in log.read_text().splitlines()) == 1
        # A new version that does not load (TensorFlow's KeyError): version 1 keeps serving.
        broken = unloadable_copy(prepared.model_dir, tmp_path / "broken")
        registry.push(broken, prepared.schema, {}, expected_serving=1)
        seen = failures()
        wait_until(lambda: failures() >= seen + 3, "three more failed polls")
        assert client.predict_raw(server.url, "churn", rows) == before
        assert len(not_followed()) == 2
        assert "version 2" in not_followed()[1] and "KeyError" in not_followed()[1]
        assert metric(server.url, "ctloop_serving_version") == 1
        # The next good version is followed: the follower is alive.
        registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=2)
        wait_until(lambda: client.predict_raw(server.url, "churn", rows)["model_version"] == "3",
                   "version 3 serving")
        assert metric(server.url, "ctloop_registry_follow_failing") == 0
        assert metric(server.url, "ctloop_serving_version") == 3
    text = log.read_text()
    assert "Traceback" not in text and "Exception in thread" not in text, text[-3000:]


def test_serve_follows_a_registry_on_s3(prepared, serving_python, rows, s3_bucket, tmp_path):
    has_boto3 = subprocess.run([serving_python, "-c", "import boto3"], capture_output=True)
    if has_boto3.returncode != 0:
        pytest.skip("the serving environment has no boto3: serving from s3:// needs it")
    uri = f"{s3_bucket.uri}/registry"
    registry = S3Registry(uri, "churn", s3_bucket.endpoint_url, cache_dir=tmp_path / "cache")
    registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=None)
    port = server_process.free_port()
    log = tmp_path / "server.log"
    command = [serving_python, "-m", "ctloop.cli", "serve", "--registry", uri,
               "--s3-endpoint-url", s3_bucket.endpoint_url, "--model-name", "churn",
               "--port", str(port)]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    try:
        server = server_process.ServerProcess(process, f"http://127.0.0.1:{port}", log)
        server.wait_ready("churn", 120)
        assert client.predict_raw(server.url, "churn", rows)["model_version"] == "1"
        registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=1,
                      serve=False)
        registry.start_canary(2, 50, expected_serving=1)
        wait_until(lambda: {client.predict_raw(server.url, "churn", rows)["model_version"]
                            for _ in range(20)} == {"1", "2"}, "a 50% canary of version 2")
        registry.end_canary(promote=True, number=2)
        wait_until(lambda: {client.predict_raw(server.url, "churn", rows)["model_version"]
                            for _ in range(10)} == {"2"}, "version 2 alone")
    finally:
        process.terminate()
        process.wait(30)
    assert "Traceback" not in log.read_text()
