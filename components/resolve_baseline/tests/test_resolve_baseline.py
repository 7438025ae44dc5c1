"""resolve_baseline as KFP runs it (its Python function); what it computes is tested in
tests/test_baseline.py, and with load_baseline in components/load_baseline/tests."""

from ctloop.components.resolve_baseline.component import resolve_baseline


def test_a_cold_start_resolves_version_and_statistics_span_0(tmp_path):
    cold = resolve_baseline.python_func(registry_uri=str(tmp_path / "empty"),
                                        model_name="churn", span=2, s3_endpoint_url="",
                                        baseline_stage="production")
    assert (cold.version, cold.statistics_span) == (0, 0)  # KFP ints: 0 is none
    assert len(cold.fingerprint) == 64


def test_the_baseline_is_the_stage_asked_for(tmp_path):
    import pytest

    from ctloop.errors import ConfigError
    from ctloop.registry import STAGING, LocalRegistry

    (tmp_path / "model").mkdir()
    (tmp_path / "schema.pbtxt").write_text("feature {}")
    registry = LocalRegistry(tmp_path / "registry", "churn")
    registry.push(tmp_path / "model", tmp_path / "schema.pbtxt", {}, expected_serving=None)
    registry.push(tmp_path / "model", tmp_path / "schema.pbtxt", {}, expected_serving=None,
                  stage=STAGING)
    resolve = resolve_baseline.python_func
    kwargs = {"registry_uri": str(tmp_path / "registry"), "model_name": "churn", "span": 0,
              "s3_endpoint_url": ""}
    assert resolve(**kwargs, baseline_stage="production").version == 1
    assert resolve(**kwargs, baseline_stage="staging").version == 2
    with pytest.raises(ConfigError, match="stage 'prod' is unknown: use one of staging, "
                                          "production"):
        resolve(**kwargs, baseline_stage="prod")
