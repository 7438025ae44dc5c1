"""The promote component: its function as KFP calls it (``.python_func``), and under kfp.local
(a subprocess, as a pipeline task runs it) on an S3 registry; a refusal fails the task with its
one line and changes nothing."""

from __future__ import annotations

import pytest
from kfp import dsl, local

from ctloop.components.promote import logic
from ctloop.components.promote.component import promote
from ctloop.errors import PromotionRefused
from ctloop.registry import STAGING, LocalRegistry, open_registry

BLESSED = {"metrics": {"auc": 0.91},
           "blessing": {"reason": "auc 0.91 >= 0.90", "forced": True, "force_reason": "hotfix"}}


def stage_two_versions(registry, tmp_path):
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "schema.pbtxt").write_text("feature {}")
    registry.push(tmp_path / "model", tmp_path / "schema.pbtxt", BLESSED, expected_serving=None)
    registry.push(tmp_path / "model", tmp_path / "schema.pbtxt", BLESSED, expected_serving=None,
                  stage=STAGING)
    registry.record_decision(2, {"action": "deploy", "stage": STAGING, "strategy": "shadow",
                                 "outcome": "passed"})


def test_the_function_promotes_and_writes_the_decision(tmp_path):
    registry = LocalRegistry(tmp_path / "registry", "churn")
    stage_two_versions(registry, tmp_path)
    report = dsl.Markdown(uri=str(tmp_path / "report.md"))
    served = promote.python_func(model_name="churn", version=2, approved_by="ana",
                                 reason="shadow clean", registry_uri=str(tmp_path / "registry"),
                                 report=report, s3_endpoint_url="")
    assert served == 2 and registry.serving().number == 2
    text = (tmp_path / "report.md").read_text()
    assert "**PROMOTED**: version 2 from staging to production" in text
    for row in ("| production before | version 1 |", "| approved by | ana |",
                "| reason | shadow clean |", "| auc | 0.9100 |", "| outcome | passed |",
                "(**forced**: hotfix)"):
        assert row in text, row


def test_a_refusal_raises_its_one_line_and_writes_nothing(tmp_path):
    registry = LocalRegistry(tmp_path / "registry", "churn")
    stage_two_versions(registry, tmp_path)
    pointer = (tmp_path / "registry" / "churn" / "SERVING").read_bytes()
    with pytest.raises(PromotionRefused, match="version 1 .* it is not in staging"):
        logic.run("churn", 1, "ana", "why not", str(tmp_path / "registry"))
    assert (tmp_path / "registry" / "churn" / "SERVING").read_bytes() == pointer


def test_under_kfp_local_on_s3(s3_bucket, tmp_path):
    uri = f"{s3_bucket.uri}/registry"
    stage_two_versions(open_registry(uri, "churn", s3_bucket.endpoint_url), tmp_path)
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "root"))
    task = promote(model_name="churn", version=2, approved_by="ana", reason="shadow clean",
                   registry_uri=uri, s3_endpoint_url=s3_bucket.endpoint_url)
    assert task.outputs["Output"] == 2
    assert "| approved by | ana |" in open(task.outputs["report"].path).read()
    reader = open_registry(uri, "churn", s3_bucket.endpoint_url)
    assert reader.serving().number == 2 and reader.history() == [1]
    decision = reader.read_record(2)["decisions"][-1]
    assert (decision["action"], decision["approved_by"]) == ("promote", "ana")
    # A second approval of the same version: the task fails with the one line.
    with pytest.raises(RuntimeError):
        promote(model_name="churn", version=2, approved_by="bob", reason="again",
                registry_uri=uri, s3_endpoint_url=s3_bucket.endpoint_url)
    failures = list((tmp_path / "root").rglob("ctloop-failure.txt"))
    assert any("production serves it already" in p.read_text() for p in failures), [
        p.read_text() for p in failures]
