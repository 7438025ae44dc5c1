"""resolve_baseline then load_baseline, as KFP runs them (their Python functions on hand-built
artifacts); what they compute is tested in tests/test_baseline.py."""

from kfp.dsl import Artifact, Model

from ctloop.components.load_baseline.component import load_baseline
from ctloop.components.resolve_baseline.component import resolve_baseline
from ctloop.registry import open_registry

MODEL_NAME = "churn"


def test_the_pair_outputs_the_fingerprint_and_the_artifacts(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"graph")
    schema = tmp_path / "schema.pbtxt"
    schema.write_text('feature { name: "age" }\n')
    stats = tmp_path / "span-1.stats"
    stats.write_bytes(b"statistics of span 1")
    uri = str(tmp_path / "registry")
    registry = open_registry(uri, MODEL_NAME)
    registry.push(model, schema, {"span": 1}, expected_serving=None)
    registry.save_statistics(1, stats)

    resolved = resolve_baseline.python_func(registry_uri=uri, model_name=MODEL_NAME, span=2,
                                            s3_endpoint_url="", baseline_stage="production")
    assert (resolved.version, resolved.statistics_span) == (1, 1)
    outputs = {"model": Model(uri=str(tmp_path / "a" / "model")),
               "schema": Artifact(uri=str(tmp_path / "a" / "schema")),
               "statistics": Artifact(uri=str(tmp_path / "a" / "statistics"))}
    load_baseline.python_func(registry_uri=uri, model_name=MODEL_NAME, span=2,
                              fingerprint=resolved.fingerprint, s3_endpoint_url="",
                              baseline_stage="production", **outputs)
    assert outputs["model"].metadata["version"] == 1
    assert outputs["model"].metadata["fingerprint"] == resolved.fingerprint
    assert outputs["schema"].metadata == {"version": 1}
    assert outputs["statistics"].metadata == {"span": 1}
    assert (tmp_path / "a" / "model" / "saved_model.pb").read_bytes() == b"graph"
    assert (tmp_path / "a" / "statistics" / "train.stats.tfrecord").read_bytes() == (
        stats.read_bytes())
