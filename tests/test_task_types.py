"""The other two task types through the whole pipeline under kfp.local, on the built-in data:
multiclass (the plan) and regression (the monthly charge), each trained, judged by TFMA on its
own metric, served by the real KServe server and checked against the model, and pushed; then a
second multiclass run, warm-started from the first."""

import json
from pathlib import Path

import pytest

from conftest import EXCLUDE, LABEL
from ctloop import contract
from ctloop.local import runner as local_run
from ctloop.registry import LocalRegistry

pytestmark = pytest.mark.local


def _params(spans_dir, span, serving_python, **task):
    # Straight into production: the second run is judged against (and warm-starts from) it.
    return {"data_uri": str(spans_dir / f"span-{span}"), "exclude": [*EXCLUDE, LABEL],
            "epochs": 6, "serving_python": serving_python, "release_stage": "production", **task}


def _train_parameters(summary) -> dict:
    output = json.loads((Path(summary["run_dir"]) / "train" / "executor_output.json").read_text())
    return output["artifacts"]["model"]["artifacts"][0]["metadata"]["parameters"]


@pytest.fixture(scope="module")
def multiclass_runs(spans_dir, serving_python, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("multiclass")
    task = {"label": "plan", "task": "multiclass", "model_name": "plans", "min_accuracy": 0.8}
    first = local_run.run(_params(spans_dir, 1, serving_python, **task), workdir)
    second = local_run.run(_params(spans_dir, 2, serving_python, warm_start=True, **task),
                           workdir)
    return workdir, first, second


def test_multiclass_is_trained_judged_on_accuracy_served_and_pushed(multiclass_runs):
    workdir, first, _ = multiclass_runs
    assert first["metrics"]["sparse_categorical_accuracy"] > 0.8
    assert first["blessed"] and first["blessing_reason"] == "passed accuracy >= 0.8"
    # The server's answers (a probability per class) equal the model's in-process ones.
    assert first["infra_blessed"], first["infra_reason"]
    assert first["infra"]["max_abs_diff"] <= 1e-4
    assert first["pushed"] and first["pushed_version"] == 1
    served = LocalRegistry(workdir / "registry", "plans").serving()
    assert contract.read_task(served.model_dir) == (
        "multiclass", ["basic", "premium", "standard"])
    assert _train_parameters(first)["warm_start"] == "off"


def test_second_multiclass_run_warm_starts_from_the_serving_version(multiclass_runs):
    _, _, second = multiclass_runs
    # Spans 1 and 2 have the same features and string vocabularies: the weights fit.
    assert _train_parameters(second)["warm_start"] == "version 1: started from its weights"
    assert second["baseline_version"] == 1
    assert "sparse_categorical_accuracy" in second["baseline_metrics"]
    checks = second["blessing_reason"]
    assert ("accuracy >= serving model's accuracy - 0.01" in checks), checks


def test_regression_is_trained_judged_on_mae_served_and_pushed(spans_dir, serving_python,
                                                              tmp_path):
    summary = local_run.run(_params(spans_dir, 1, serving_python, label="monthly_charges",
                                    task="regression", model_name="charges", max_mae=9.0),
                            tmp_path)
    # The charge is the plan's base plus noise of sd 8: the best MAE is about 6.4.
    assert summary["metrics"]["mean_absolute_error"] < 9.0
    assert summary["blessed"] and summary["blessing_reason"] == "passed MAE <= 9.0"
    assert summary["infra_blessed"], summary["infra_reason"]
    assert summary["pushed"] and summary["pushed_version"] == 1
    served = LocalRegistry(tmp_path / "registry", "charges").serving()
    assert contract.read_task(served.model_dir) == ("regression", [])


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_the_server_answers_each_task_over_v1_and_v2(task, task_data, serving_python):
    import urllib.request

    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from ctloop.contract import to_inputs
    from ctloop.serving import client
    from ctloop.serving import process as server_process

    data = task_data[task]
    frame = pd.read_parquet(data.eval).head(20)
    features = data.result.features
    signature = tf.saved_model.load(str(data.model_dir)).signatures[contract.SERVING_SIGNATURE]
    expected = signature(**{k: tf.constant(v) for k, v in to_inputs(frame, features).items()}
                         )[contract.OUTPUT_KEYS[task]].numpy()
    rows = json.loads(frame[[f.name for f in features]].to_json(orient="records"))
    with server_process.serve(serving_python, task, model_dir=str(data.model_dir)) as server:
        server.wait_ready(task, 120)
        v1 = np.asarray(client.predict(server.url, task, rows))
        np.testing.assert_allclose(v1, expected, rtol=1e-5, atol=1e-5)
        with urllib.request.urlopen(f"{server.url}/v2/models/{task}") as answer:
            (output,) = json.loads(answer.read())["outputs"]
        columns = to_inputs(frame, features)
        body = {"inputs": [
            {"name": f.name, "shape": [len(frame)],
             "datatype": "FP32" if f.dtype == contract.NUMERIC else "BYTES",
             "data": [None if isinstance(v, float) and np.isnan(v) else v
                      for v in columns[f.name].tolist()]}
            for f in features]}
        request = urllib.request.Request(f"{server.url}/v2/models/{task}/infer",
                                         json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as answer:
            (v2,) = json.loads(answer.read())["outputs"]
    width = [3] if task == "multiclass" else []
    assert output == {"name": contract.OUTPUT_KEYS[task], "datatype": "FP32",
                      "shape": [-1, *width]}
    assert v2["name"] == contract.OUTPUT_KEYS[task] and v2["shape"] == [20, *width]
    np.testing.assert_allclose(np.reshape(v2["data"], [20, *width]), expected, rtol=1e-5,
                               atol=1e-5)
