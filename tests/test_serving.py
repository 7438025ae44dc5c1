"""End-to-end tests of ``ctloop serve`` (KServe 0.21) on a real SavedModel.

The model is exported and its reference predictions computed here, in the pipeline environment
(TF 2.16); the server runs in the serving environment (KServe 0.21, TF 2.21) as a subprocess. So
these tests also show that a model exported by one environment serves the same in the other.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
from pathlib import Path

import httpx
import pytest

from ctloop import contract
from ctloop.registry import LocalRegistry
from ctloop.serving import process as server_process

pytestmark = pytest.mark.serving

MODEL_NAME = "churn-test"
MAX_BATCH = 8
STARTUP_TIMEOUT_S = 120.0
FEATURES = {"age": contract.NUMERIC, "income": contract.NUMERIC, "plan": contract.CATEGORICAL}
# Rows as clients send them: nulls, a numeric string, an unseen category, a number for a string.
ROWS = [
    {"age": 31, "income": 52000.0, "plan": "basic"},
    {"age": None, "income": 18000, "plan": "premium"},
    {"age": 67.5, "income": None, "plan": None},
    {"age": "45", "income": 0, "plan": "unknown-plan"},
    {"age": 22, "income": 99000, "plan": 3},
]
V2_DATATYPES = {"age": "FP32", "income": "FP64", "plan": "BYTES"}


def contract_inputs(rows: list[dict]) -> dict[str, list]:
    """The rows as the contract's signature takes them: NaN / "" for null, strings via str()."""
    return {
        name: [
            (math.nan if row[name] is None else float(row[name]))
            if dtype == contract.NUMERIC
            else ("" if row[name] is None else str(row[name]))
            for row in rows
        ]
        for name, dtype in FEATURES.items()
    }


def v2_request(rows: list[dict]) -> dict:
    """A V2 JSON inference request for rows: one input per feature, null for a missing value."""
    inputs = []
    for name, values in contract_inputs(rows).items():
        if FEATURES[name] == contract.NUMERIC:
            values = [None if math.isnan(value) else value for value in values]  # JSON has no NaN
        inputs.append(
            {"name": name, "shape": [len(values)], "datatype": V2_DATATYPES[name], "data": values}
        )
    return {"inputs": inputs}


def export_model(model_dir: Path) -> None:
    """A small contract model: mean-imputed numbers and a plan lookup into a logistic score."""
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.means = tf.constant([40.0, 50000.0])
            self.weights = tf.Variable([0.03, -1.5e-5])
            self.plans = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(["basic", "premium"], [0.4, 1.3]),
                default_value=-0.2,
            )

        @tf.function(
            input_signature=[
                {
                    name: tf.TensorSpec(
                        [None], tf.float32 if dtype == contract.NUMERIC else tf.string, name=name
                    )
                    for name, dtype in FEATURES.items()
                }
            ]
        )
        def serve(self, raw):
            numbers = tf.stack([raw["age"], raw["income"]], axis=1)
            numbers = tf.where(tf.math.is_nan(numbers), self.means, numbers)
            logit = tf.linalg.matvec(numbers - self.means, self.weights)
            score = tf.sigmoid(logit + self.plans.lookup(raw["plan"]))
            return {contract.OUTPUT_KEYS[contract.BINARY]: score}

    scorer = Scorer()
    tf.saved_model.save(
        scorer, str(model_dir), signatures={contract.SERVING_SIGNATURE: scorer.serve}
    )
    features = [{"name": name, "dtype": dtype} for name, dtype in FEATURES.items()]
    (model_dir / contract.FEATURES_FILE).write_text(json.dumps({"features": features}))


def serve_command(python: str, *args: str) -> list[str]:
    return [python, "-m", "ctloop.cli", "serve", "--model-name", MODEL_NAME, *args]


@contextlib.contextmanager
def client_of(serving_python: str, **source):
    """An httpx client of a running server (ctloop.serving.process); stops it afterwards."""
    with server_process.serve(serving_python, MODEL_NAME, **source) as server:
        server.wait_ready(MODEL_NAME, STARTUP_TIMEOUT_S)
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            yield client


def predict_v1(client: httpx.Client, body) -> httpx.Response:
    return client.post(f"/v1/models/{MODEL_NAME}:predict", json=body)


def infer_v2(client: httpx.Client, body) -> httpx.Response:
    return client.post(f"/v2/models/{MODEL_NAME}/infer", json=body)


def assert_bad_request(response: httpx.Response, *fragments: str) -> None:
    """Asserts a 400 whose one-line error message names every fragment."""
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def predict_count(client: httpx.Client) -> float:
    """KServe's Prometheus count of predict calls for the model."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    sample = f'request_predict_seconds_count{{model_name="{MODEL_NAME}"}} '
    (line,) = [line for line in response.text.splitlines() if line.startswith(sample)]
    return float(line.removeprefix(sample))


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory) -> Path:
    pytest.importorskip("tensorflow")
    work = tmp_path_factory.mktemp("serving-model")
    export_model(work / "export")
    schema = work / "schema.pbtxt"
    schema.write_text("".join(f'feature {{ name: "{name}" }}\n' for name in FEATURES))
    LocalRegistry(work / "registry", MODEL_NAME).push(
        work / "export", schema, {"test": "serving"}, expected_serving=None)
    return work / "registry"


@pytest.fixture(scope="session")
def reference(registry_root) -> list[float]:
    """In-process predictions of the registered SavedModel on ROWS (pipeline TF)."""
    import tensorflow as tf

    model_dir = LocalRegistry(registry_root, MODEL_NAME).serving().model_dir
    signature = tf.saved_model.load(str(model_dir)).signatures[contract.SERVING_SIGNATURE]
    inputs = {name: tf.constant(values) for name, values in contract_inputs(ROWS).items()}
    return signature(**inputs)[contract.OUTPUT_KEYS[contract.BINARY]].numpy().tolist()


@pytest.fixture(scope="module")
def server(serving_python, registry_root):
    with client_of(serving_python, registry=str(registry_root), max_batch=MAX_BATCH) as client:
        yield client


@pytest.fixture(autouse=True)
def still_answers_as_before(request):
    """After every test on the shared server (each bad request among them), the served model
    still answers the reference rows with the same predictions."""
    yield
    if "server" in request.fixturenames:
        server, reference = (request.getfixturevalue(n) for n in ("server", "reference"))
        answer = predict_v1(server, {"instances": ROWS})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == pytest.approx(reference, abs=1e-5)


def test_health_routes(server):
    assert server.get("/v2/health/ready").json() == {"ready": True}
    assert server.get(f"/v1/models/{MODEL_NAME}").json() == {"name": MODEL_NAME, "ready": True}
    metadata = server.get(f"/v2/models/{MODEL_NAME}").json()
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("age", "FP32"), ("income", "FP32"), ("plan", "BYTES")
    ]  # fmt: skip


@pytest.mark.parametrize("request_log", [False, True], ids=["quiet", "request-log"])
def test_a_line_per_request_only_with_request_log(serving_python, registry_root, tmp_path,
                                                  request_log):
    log = tmp_path / "server.log"
    with server_process.serve(serving_python, MODEL_NAME, registry=str(registry_root),
                              log_path=str(log), request_log=request_log) as server:
        server.wait_ready(MODEL_NAME, STARTUP_TIMEOUT_S)
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            for _ in range(3):
                assert predict_v1(client, {"instances": ROWS}).status_code == 200
            assert predict_count(client) == 3  # /metrics counts them either way
    text = log.read_text()
    assert "ctloop serving model" in text
    # uvicorn's access line, KServe's timing middleware and its per-request latency line.
    counts = [text.count(f) for f in (f"POST /v1/models/{MODEL_NAME}",
                                      f"kserve.io.v1.models.{MODEL_NAME}:predict", "predict_ms")]
    assert counts == ([3, 6, 3] if request_log else [0, 0, 0]), text


def test_v1_predictions_match_savedmodel(server, reference):
    response = predict_v1(server, {"instances": ROWS})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == pytest.approx(reference, abs=1e-5)


def test_v1_accepts_json_with_charset(server, reference):
    response = server.post(
        f"/v1/models/{MODEL_NAME}:predict",
        content=json.dumps({"instances": ROWS[:1]}),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == pytest.approx(reference[:1], abs=1e-5)


def test_v2_infer_matches_savedmodel(server, reference):
    response = infer_v2(server, v2_request(ROWS))
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        contract.OUTPUT_KEYS[contract.BINARY], "FP32", [len(ROWS)]
    )  # fmt: skip
    assert output["data"] == pytest.approx(reference, abs=1e-5)


def test_v2_accepts_integer_datatypes(server, reference):
    body = v2_request(ROWS[:1])
    body["inputs"][0].update(datatype="INT32", data=[31])
    body["inputs"][1].update(datatype="INT64", data=[52000])
    response = infer_v2(server, body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == pytest.approx(reference[:1], abs=1e-5)


@pytest.mark.parametrize(
    "path", [f"/v1/models/{MODEL_NAME}:predict", f"/v2/models/{MODEL_NAME}/infer"]
)
def test_malformed_json_is_400(server, path):
    response = server.post(
        path, content=b'{"instances": [', headers={"content-type": "application/json"}
    )
    assert_bad_request(response)


@pytest.mark.parametrize("body", [{"rows": ROWS}, {"instances": {"0": ROWS[0]}}, [ROWS[0]]])
def test_v1_body_without_instances_list_is_400(server, body):
    assert_bad_request(predict_v1(server, body), '"instances"')


def test_v1_missing_feature_is_400(server):
    rows = [ROWS[0], {"age": 50, "income": 1.0}]
    assert_bad_request(predict_v1(server, {"instances": rows}), "instances[1]", "plan")


@pytest.mark.parametrize(
    ("name", "value"), [("age", "forty"), ("age", {"years": 40}), ("age", True), ("plan", ["a"])]
)
def test_v1_wrong_type_is_400(server, name, value):
    rows = [ROWS[0], {**ROWS[0], name: value}]
    assert_bad_request(predict_v1(server, {"instances": rows}), f"'{name}'", "instances[1]")


def test_v1_unknown_feature_is_400(server):
    rows = [{**ROWS[0], "tenure": 3}]
    assert_bad_request(predict_v1(server, {"instances": rows}), "instances[0]", "tenure")


def test_v1_oversized_batch_is_400(server):
    rows = [ROWS[0]] * (MAX_BATCH + 1)
    assert_bad_request(predict_v1(server, {"instances": rows}), str(MAX_BATCH + 1), str(MAX_BATCH))


def test_v2_missing_input_is_400(server):
    body = v2_request(ROWS)
    body["inputs"] = [i for i in body["inputs"] if i["name"] != "plan"]
    assert_bad_request(infer_v2(server, body), "plan")


def test_v2_unknown_input_is_400(server):
    body = v2_request(ROWS)
    body["inputs"].append(
        {"name": "tenure", "shape": [len(ROWS)], "datatype": "FP32", "data": [1] * len(ROWS)}
    )
    assert_bad_request(infer_v2(server, body), "tenure")


def test_v2_mismatched_lengths_are_400(server):
    body = v2_request(ROWS)
    body["inputs"][2].update(shape=[2], data=["basic", "premium"])
    assert_bad_request(infer_v2(server, body), "age", "plan")


def test_v2_data_not_matching_shape_is_400(server):
    body = v2_request(ROWS)
    body["inputs"][0]["data"] = body["inputs"][0]["data"][:-1]
    assert_bad_request(infer_v2(server, body), "'age'")


@pytest.mark.parametrize(
    ("index", "change", "fragment"),
    [
        (0, {"datatype": "BYTES"}, "'age'"),
        (2, {"datatype": "FP32"}, "'plan'"),
        (0, {"data": ["forty"] + [1.0] * (len(ROWS) - 1)}, "'age'"),
        (2, {"data": [{"x": 1}] * len(ROWS)}, "'plan'"),
    ],
)
def test_v2_wrong_type_is_400(server, index, change, fragment):
    body = v2_request(ROWS)
    body["inputs"][index].update(change)
    assert_bad_request(infer_v2(server, body), fragment)


def test_v2_schema_violation_is_400(server):
    assert_bad_request(infer_v2(server, {"inputs": [{"name": "age"}]}), "inputs.0.shape")


def test_v2_oversized_batch_is_400(server):
    assert_bad_request(infer_v2(server, v2_request([ROWS[0]] * (MAX_BATCH + 1))), str(MAX_BATCH))


def test_metrics_count_predictions(server):
    before = predict_count(server)
    assert predict_v1(server, {"instances": ROWS}).status_code == 200
    assert_bad_request(predict_v1(server, {"instances": [{}]}))
    assert predict_count(server) == before + 1


def test_registry_without_serving_version_fails_fast(serving_python, tmp_path):
    result = subprocess.run(
        serve_command(serving_python, "--registry", str(tmp_path)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no serving version" in result.stderr and "run the pipeline first" in result.stderr


@pytest.fixture(scope="module")
def trained_server(serving_python, prepared):
    """A server on the model the trainer exported (Keras 3 ExportArchive, TF 2.16)."""
    with client_of(serving_python, model_dir=str(prepared.model_dir)) as client:
        yield client


def test_trained_model_serves_its_in_process_predictions(trained_server, prepared):
    import pandas as pd
    import tensorflow as tf

    from ctloop.contract import to_inputs

    frame = pd.read_parquet(prepared.eval).head(20)
    frame.loc[0, "income"] = None
    frame.loc[1, "region"] = None
    signature = tf.saved_model.load(str(prepared.model_dir)).signatures["serving_default"]
    inputs = {k: tf.constant(v) for k, v in to_inputs(frame, prepared.features).items()}
    expected = signature(**inputs)[contract.OUTPUT_KEYS[contract.BINARY]].numpy().tolist()

    names = [f.name for f in prepared.features]
    rows = json.loads(frame[names].to_json(orient="records"))  # NaN -> null
    response = predict_v1(trained_server, {"instances": rows})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == pytest.approx(expected, abs=1e-5)
