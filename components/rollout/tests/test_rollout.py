"""rollout logic: the gate, and a push only when data is valid and the model blessed."""

import pytest

from ctloop.components.rollout import logic
from ctloop.registry import LocalRegistry
from ctloop.serving import canary


def _rollout(prepared, registry_root, *, data_valid=True, anomalies=0, blessed=True,
             reason="AUC 0.8 >= 0.7", infra_blessed=True, infra_reason="within the SLO",
             baseline="current"):
    if baseline == "current":
        serving = LocalRegistry(registry_root, "churn").serving()
        baseline = serving.number if serving else None
    return logic.run(str(prepared.model_dir), str(prepared.schema), data_valid, anomalies,
                     blessed, reason, infra_blessed, infra_reason, baseline, str(registry_root),
                     "churn", {"span": 1})


def test_blessed_valid_model_is_pushed_with_its_schema(prepared, tmp_path):
    result = _rollout(prepared, tmp_path)
    assert (result.pushed, result.version, result.previous_version) == (True, 1, None)
    serving = LocalRegistry(tmp_path, "churn").serving()
    assert serving.number == 1
    assert (serving.model_dir / "saved_model.pb").is_file()
    assert serving.schema_path.read_text() == prepared.schema.read_text()
    assert serving.record()["previous_version"] is None

    again = _rollout(prepared, tmp_path)
    assert (again.version, again.previous_version) == (2, 1)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"data_valid": False, "anomalies": 3},
         "data validation did not pass (3 blocking anomalies)"),
        ({"data_valid": None}, "data validation did not pass"),
        ({"blessed": False, "reason": "AUC 0.61 < 0.7"}, "model not blessed: AUC 0.61 < 0.7"),
        ({"blessed": None, "reason": ""}, "model not blessed: no blessing recorded"),
        ({"infra_blessed": False, "infra_reason": "p99 latency 900 ms (needs <= 250 ms)"},
         "model not infra-blessed: p99 latency 900 ms"),
        ({"infra_blessed": None, "infra_reason": ""},
         "model not infra-blessed: no infra blessing recorded"),
    ],
)
def test_gate_keeps_the_serving_model(prepared, tmp_path, kwargs, reason):
    first = _rollout(prepared, tmp_path)
    result = _rollout(prepared, tmp_path, **kwargs)
    assert not result.pushed and result.version is None
    assert result.reason.startswith(reason)
    registry = LocalRegistry(tmp_path, "churn")
    assert registry.serving().number == first.version
    assert [v.number for v in registry.versions()] == [1]


def test_model_judged_against_an_older_serving_version_is_not_pushed(prepared, tmp_path):
    _rollout(prepared, tmp_path)
    _rollout(prepared, tmp_path)
    result = _rollout(prepared, tmp_path, baseline=1)
    assert not result.pushed
    assert "now serves version 2, not version 1" in result.reason
    assert LocalRegistry(tmp_path, "churn").serving().number == 2


def test_no_canary_over_a_version_another_run_promoted_since_the_push(prepared, tmp_path):
    # Runs A and B were both judged against version 1 and pushed versions 2 and 3 unserved;
    # A's canary promoted version 2 before B's started.
    registry = LocalRegistry(tmp_path, "churn")
    _rollout(prepared, tmp_path)
    for _ in (2, 3):
        registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=1, serve=False)
    registry.set_serving(2)
    deploy = logic.local_canary("http://127.0.0.1:9", [], canary.CanarySLO())
    deployment = deploy(registry, 3, 1)
    assert not deployment.promoted
    assert deployment.reason == (
        f"no canary: registry {registry.path} now serves version 2, not version 1 the model was "
        "evaluated against; rerun to evaluate against the new serving model")
    assert registry.serving().number == 2 and registry.canary() is None


@pytest.mark.parametrize("where", ["local", "s3"])
def test_set_serving_moves_the_pointer_only_over_the_expected_version(prepared, tmp_path,
                                                                      where, request):
    from ctloop.errors import StaleBaselineError
    from ctloop.registry import open_registry

    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        registry = open_registry(f"{bucket.uri}/registry", "churn", bucket.endpoint_url)
    else:
        registry = LocalRegistry(tmp_path, "churn")
    registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=None)
    for _ in (2, 3):
        registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=1, serve=False)
    assert registry.set_serving(2, expected_serving=1).number == 2  # run A's promotion
    with pytest.raises(StaleBaselineError, match="now serves version 2, not version 1"):
        registry.set_serving(3, expected_serving=1)  # run B, judged against version 1 too
    assert registry.serving().number == 2
    assert registry.set_serving(3).number == 3  # an operator's own switch checks nothing


def test_a_pushed_version_stores_its_spans_statistics_and_only_then(prepared, tmp_path):
    """The drift reference of later spans: a span's statistics are stored with the version
    pushed from it, never for a span that was blocked or judged against a stale baseline."""
    from ctloop.registry import open_registry

    stats = tmp_path / "train.stats.tfrecord"
    stats.write_bytes(b"statistics")

    def rollout(span, **kwargs):
        serving = open_registry(str(tmp_path), "churn").serving()
        return logic.run(str(prepared.model_dir), str(prepared.schema), True, 0, True, "passed",
                         True, "within the SLO", serving.number if serving else None,
                         str(tmp_path), "churn", {"span": span},
                         statistics=(span, str(stats)), **kwargs)

    registry = open_registry(str(tmp_path), "churn")
    assert rollout(1).pushed and registry.previous_statistics(2)[0] == 1
    blocked = logic.run(str(prepared.model_dir), str(prepared.schema), False, 2, None, "", None,
                        "", 1, str(tmp_path), "churn", {"span": 2}, statistics=(2, str(stats)))
    assert not blocked.pushed and blocked.previous_version == 1
    stale = logic.run(str(prepared.model_dir), str(prepared.schema), True, 0, True, "passed",
                      True, "ok", None, str(tmp_path), "churn", {"span": 3},
                      statistics=(3, str(stats)))
    assert not stale.pushed and "now serves version 1, not version None" in stale.reason
    assert registry.previous_statistics(4)[0] == 1  # neither span 2's nor span 3's
