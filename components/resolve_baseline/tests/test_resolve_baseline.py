"""resolve_baseline as KFP runs it (its Python function); what it computes is tested in
tests/test_baseline.py, and with load_baseline in components/load_baseline/tests."""

from ctloop.components.resolve_baseline.component import resolve_baseline


def test_a_cold_start_resolves_version_and_statistics_span_0(tmp_path):
    cold = resolve_baseline.python_func(registry_uri=str(tmp_path / "empty"),
                                        model_name="churn", span=2, s3_endpoint_url="")
    assert (cold.version, cold.statistics_span) == (0, 0)  # KFP ints: 0 is none
    assert len(cold.fingerprint) == 64
