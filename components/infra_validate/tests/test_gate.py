"""infra_validate after a failed gate (the local pipeline, which has no dsl.If): no server."""

from kfp.dsl import Artifact, Dataset, Markdown, Metrics, Model

from ctloop.components.infra_validate.component import infra_validate
from ctloop.settings import SLO, KServe


def test_no_server_is_started_for_a_model_that_is_not_blessed(tmp_path):
    blessing = Artifact(uri=str(tmp_path / "blessing"))
    blessing.metadata.update(blessed=False, reason="AUC 0.61 < 0.7")
    outputs = {"infra_blessing": Artifact(uri=str(tmp_path / "infra")),
               "metrics": Metrics(uri=str(tmp_path / "metrics")),
               "report": Markdown(uri=str(tmp_path / "report.md")),
               "server_log": Artifact(uri=str(tmp_path / "server.log"))}
    infra_blessed = infra_validate.python_func(
        model=Model(uri=str(tmp_path / "model")), eval_data=Dataset(uri=str(tmp_path / "eval")),
        blessing=blessing, blessed=False, model_name="churn", target="local",
        kserve_namespace=KServe.namespace, kserve_mode=KServe.mode,
        kserve_service_account=KServe.service_account, max_p99_ms=SLO.max_p99_ms,
        min_rps=SLO.min_rps, tolerance=SLO.tolerance, concurrency=SLO.concurrency,
        requests=SLO.requests, startup_timeout_s=SLO.startup_timeout_s,
        serving_python="/nonexistent/python", **outputs)
    meta = outputs["infra_blessing"].metadata
    assert infra_blessed is False and meta["infra_blessed"] is None
    assert meta["skipped"] == "model not blessed: AUC 0.61 < 0.7"
    assert meta["reason"] == "skipped: model not blessed: AUC 0.61 < 0.7"
    assert "Skipped: model not blessed" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "server.log").read_text() == "no server started\n"

    # Evaluation itself skipped (data validation blocked): its reason travels on.
    blessing.metadata["skipped"] = "data validation blocked: 1 blocking anomaly: plan (Drift)"
    infra_validate.python_func(
        model=Model(uri=str(tmp_path / "model")), eval_data=Dataset(uri=str(tmp_path / "eval")),
        blessing=blessing, blessed=False, model_name="churn", target="local",
        kserve_namespace=KServe.namespace, kserve_mode=KServe.mode,
        kserve_service_account=KServe.service_account, max_p99_ms=SLO.max_p99_ms,
        min_rps=SLO.min_rps, tolerance=SLO.tolerance, concurrency=SLO.concurrency,
        requests=SLO.requests, startup_timeout_s=SLO.startup_timeout_s, **outputs)
    assert outputs["infra_blessing"].metadata["skipped"].startswith("data validation blocked")
