"""infra_validate with the real KServe server of the serving environment: a good model is
infra-blessed; a model that cannot load, answers NaN, or misses the SLO is not."""

import json
import shutil

import pytest

from conftest import export_nan_model
from ctloop.components.infra_validate import logic
from ctloop.errors import ConfigError

pytestmark = pytest.mark.serving
FAST = dict(requests=40, rows=64, concurrency=2)


def _run(model_dir, prepared, serving_python, tmp_path, **slo):
    slo = logic.SLO(**{**FAST, **slo})
    return logic.run(str(model_dir), str(prepared.eval), slo,
                     logic.local_server(str(model_dir), "churn", serving_python,
                                        slo.startup_timeout_s, str(tmp_path / "server.log")))


def test_good_model_is_infra_blessed(prepared, serving_python, tmp_path):
    result = _run(prepared.model_dir, prepared, serving_python, tmp_path)
    assert result.blessed, result.reason
    assert result.metrics["max_abs_diff"] <= 1e-4
    assert 0 < result.metrics["p50_ms"] <= result.metrics["p99_ms"]
    assert result.metrics["rps"] > 0 and result.metrics["startup_s"] > 0
    report = logic.report_markdown(result, "churn")
    assert "**INFRA-BLESSED**" in report and "**fail**" not in report
    assert "ctloop serving model 'churn'" in (tmp_path / "server.log").read_text()


def test_eval_data_without_a_feature_column_is_served_as_missing(prepared, serving_python,
                                                                  tmp_path):
    """A span whose column vanished: data validation blocks it; infra validation still completes
    with the column sent as missing values, instead of failing the run on a KeyError."""
    import pandas as pd

    pd.read_parquet(prepared.eval).drop(columns=["income"]).to_parquet(tmp_path / "eval.parquet")
    slo = logic.SLO(**FAST)
    result = logic.run(str(prepared.model_dir), str(tmp_path / "eval.parquet"), slo,
                       logic.local_server(str(prepared.model_dir), "churn", serving_python,
                                          slo.startup_timeout_s, str(tmp_path / "server.log")))
    assert result.blessed, result.reason
    assert result.metrics["max_abs_diff"] <= 1e-4


def test_model_disagreeing_with_its_features_is_not_infra_blessed(prepared, serving_python,
                                                                  tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(prepared.model_dir, broken)
    described = json.loads((broken / "features.json").read_text())
    described["features"][0]["dtype"] = "string"  # disagrees with the signature
    (broken / "features.json").write_text(json.dumps(described))
    result = _run(broken, prepared, serving_python, tmp_path)
    assert not result.blessed
    assert result.reason.startswith("model answers in-process: model ")
    assert "cannot predict in-process" in result.reason and "\n" not in result.reason
    assert "**NOT INFRA-BLESSED**" in logic.report_markdown(result, "churn")


def test_server_not_ready_by_the_deadline_is_not_infra_blessed(prepared, serving_python,
                                                              tmp_path):
    result = _run(prepared.model_dir, prepared, serving_python, tmp_path, startup_timeout_s=0.5)
    assert not result.blessed
    assert result.reason.startswith("server answers: model server not ready after 0 s")


def test_model_answering_nan_is_not_infra_blessed(prepared, serving_python, tmp_path):
    export_nan_model(prepared, tmp_path / "nan")
    result = _run(tmp_path / "nan", prepared, serving_python, tmp_path)
    assert not result.blessed
    assert "served = in-process predictions: max |diff| inf" in result.reason


def test_model_too_slow_for_the_slo_is_not_infra_blessed(prepared, serving_python, tmp_path):
    result = _run(prepared.model_dir, prepared, serving_python, tmp_path, max_p99_ms=0.01)
    assert not result.blessed
    assert "p99 latency, 2 clients" in result.reason and "(needs <= 0.01 ms)" in result.reason


def test_missing_serving_environment_is_not_infra_blessed(prepared, tmp_path):
    result = _run(prepared.model_dir, prepared, str(tmp_path / "no-python"), tmp_path)
    assert not result.blessed
    assert "serving python" in result.reason and "does not exist" in result.reason


MODEL_URI = "s3://models/churn/candidate"


def _candidate(kserve_cluster, token="a1b2c3", timeout_s=10.0):
    from ctloop import kserve

    return logic.kserve_candidate(kserve_cluster[1], kserve.ServiceConfig(name="churn"),
                                  MODEL_URI, startup_timeout_s=timeout_s, token=token,
                                  poll_s=0.02)


def test_candidate_as_a_short_lived_inference_service(prepared, serving_python, tmp_path,
                                                      kserve_cluster):
    from ctloop.serving import process as server_process

    server, _ = kserve_cluster
    # What the candidate's pods would run, reached at the address the API server reports.
    with server_process.serve(serving_python, "churn-infra-a1b2c3",
                              model_dir=str(prepared.model_dir)) as pod:
        pod.wait_ready("churn-infra-a1b2c3", 120)
        server.address = pod.url
        result = logic.run(str(prepared.model_dir), str(prepared.eval), logic.SLO(**FAST),
                           _candidate(kserve_cluster))
    assert result.blessed, result.reason
    assert result.metrics["max_abs_diff"] <= 1e-4
    applied = server.applied[-1]
    assert applied["metadata"]["name"] == "churn-infra-a1b2c3"
    assert applied["spec"]["predictor"]["containers"][0]["env"][0]["value"] == MODEL_URI
    # Deleted, and waited for until KServe's finalizer let it go.
    assert server.isvcs == {} and server.deleted == ["churn-infra-a1b2c3"]
    report = logic.report_markdown(result, "churn")
    assert "short-lived InferenceService ctloop-serving/churn-infra-a1b2c3" in report


def test_candidate_that_cannot_load_is_not_infra_blessed_and_is_deleted(prepared,
                                                                       kserve_cluster):
    server, _ = kserve_cluster
    server.broken.add(MODEL_URI)
    result = logic.run(str(prepared.model_dir), str(prepared.eval), logic.SLO(**FAST),
                       _candidate(kserve_cluster, timeout_s=120))
    assert not result.blessed
    assert ("server answers: InferenceService ctloop-serving/churn-infra-a1b2c3 generation 1 "
            "failed: pod churn-infra-a1b2c3-predictor-") in result.reason
    assert "the model could not be downloaded (storage-initializer" in result.reason
    assert result.metrics == {}  # failed at once, not after the 120 s deadline
    assert server.isvcs == {} and server.deleted == ["churn-infra-a1b2c3"]


def test_a_leftover_candidate_of_another_run_is_left_alone(prepared, kserve_cluster):
    from ctloop import kserve

    server, _ = kserve_cluster
    # Another run of the same model is validating its own candidate right now.
    server.apply(kserve.candidate_service(kserve.ServiceConfig(name="churn"), MODEL_URI,
                                          "other1"))
    server.broken.add(MODEL_URI)
    logic.run(str(prepared.model_dir), str(prepared.eval), logic.SLO(**FAST),
              _candidate(kserve_cluster))
    assert set(server.isvcs) == {"churn-infra-other1"}
    assert server.deleted == ["churn-infra-a1b2c3"]


def test_invalid_slo():
    with pytest.raises(ConfigError, match="concurrency 0 is invalid"):
        logic.SLO(concurrency=0)
    with pytest.raises(ConfigError, match="max_p99_ms -1 is invalid"):
        logic.SLO(max_p99_ms=-1)


@pytest.mark.parametrize(("served", "expected", "absolute", "relative"), [
    ([0.25, 0.5], [0.25, 0.50002], 2e-5, 2e-5),  # probabilities: absolute
    ([120.0], [120.006], 0.006, 5e-5),  # a large regression value: relative to its size
    ([[0.2, 0.8], [0.5, 0.5]], [[0.2, 0.8], [0.5, 0.5]], 0.0, 0.0),  # multiclass rows
    ([0.5, None], [0.5, 0.5], float("inf"), float("inf")),  # NaN reaches JSON as null
    ([[0.2, 0.8]], [[0.2, 0.7, 0.1]], float("inf"), float("inf")),  # another shape
    (["yes"], [0.5], float("inf"), float("inf")),  # not a number
])
def test_compare_served_with_in_process_answers(served, expected, absolute, relative):
    assert logic.compare(served, expected) == pytest.approx((absolute, relative), rel=1e-3)


def test_no_garbage_collection_pauses_the_timed_requests(monkeypatch):
    """A collection of the runner's large heap stops every client thread at once and would be
    timed as the server's latency; collections run again once the requests are done."""
    import gc

    from ctloop.settings import SLO

    enabled = []

    def predict(url, model_name, rows):
        enabled.append(gc.isenabled())
        return [0.5]

    monkeypatch.setattr(logic.client, "predict", predict)
    metrics = logic.load_test("http://127.0.0.1:1", "churn", [{"age": 1.0}], SLO())
    assert len(enabled) == SLO().requests and not any(enabled)
    assert gc.isenabled() and metrics["p99_ms"] >= metrics["p50_ms"] >= 0
