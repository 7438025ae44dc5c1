"""The local canary: verdicts over probe statistics, and rollouts against a real server that
follows the registry (promote a good canary; roll back one that cannot load or is too slow)."""

import json
import shutil

import pytest

from ctloop.components.rollout import logic
from ctloop.errors import ConfigError
from ctloop.registry import LocalRegistry
from ctloop.serving import canary
from ctloop.serving import process as server_process

SLO = canary.CanarySLO(percent=50, requests=60, min_canary_requests=10, deadline_s=30)


def _stats(canary_ms, stable_ms=(5.0,) * 10, errors=0):
    stats = canary.ProbeStats()
    for ms in stable_ms:
        stats.add("1", ms)
    for ms in canary_ms:
        stats.add("2", ms)
    stats.errors = errors
    return stats


def test_healthy_canary_is_promoted():
    promote, why = canary.verdict(_stats([8.0] * 30), "2", SLO)
    assert promote and why.startswith("canary answered 30 of 40 requests")


@pytest.mark.parametrize(
    ("stats", "reason"),
    [
        (_stats([8.0] * 5), "canary answered 5 of 15 requests, fewer than the 10 needed"),
        (_stats([8.0] * 30, errors=2), "error rate 4.8% above 0.0%"),
        (_stats([8.0] * 29 + [900.0]), "canary p99 900.0 ms above 250 ms"),
        (canary.ProbeStats(), "canary answered 0 of 0 requests"),
    ],
)
def test_unhealthy_or_unproven_canary_is_rolled_back(stats, reason):
    promote, why = canary.verdict(stats, "2", SLO)
    assert not promote and why.startswith(reason)


def test_invalid_canary_settings():
    with pytest.raises(ConfigError, match="canary percent 0 is out of range"):
        canary.CanarySLO(percent=0)
    with pytest.raises(ConfigError, match="requests 5 / min 10 are invalid"):
        canary.CanarySLO(requests=5, min_canary_requests=10)


@pytest.fixture(scope="module")
def live(prepared, serving_python, tmp_path_factory):
    """A registry serving version 1, and a server following it."""
    registry = LocalRegistry(tmp_path_factory.mktemp("canary") / "registry", "churn")
    registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=None)
    with server_process.serve(serving_python, "churn", registry=str(registry.root)) as server:
        server.wait_ready("churn", 120)
        yield registry, server


def _rollout(live, prepared, model_dir, slo=SLO):
    registry, server = live
    return logic.run(str(model_dir), str(prepared.schema), True, 0, True, "blessed", True,
                     "infra-blessed", registry.serving().number, str(registry.root), "churn", {},
                     logic.local_canary(server.url, canary.rows(str(prepared.eval),
                                                                str(prepared.model_dir)), slo))


@pytest.mark.serving
def test_good_canary_is_promoted_on_the_running_server(live, prepared):
    registry, _ = live
    before = registry.serving().number
    result = _rollout(live, prepared, prepared.model_dir)
    assert result.pushed and result.promoted, result.reason
    assert "50% canary promoted: canary answered" in result.reason
    assert registry.serving().number == result.version == before + 1
    assert registry.canary() is None


@pytest.mark.serving
def test_canary_that_cannot_load_is_rolled_back(live, prepared, tmp_path):
    registry, server = live
    broken = tmp_path / "broken"
    shutil.copytree(prepared.model_dir, broken)
    described = json.loads((broken / "features.json").read_text())
    described["features"][0]["dtype"] = "string"  # the server refuses to load it
    (broken / "features.json").write_text(json.dumps(described))
    before = registry.serving().number
    result = _rollout(live, prepared, broken,
                      canary.CanarySLO(percent=50, requests=20, min_canary_requests=10,
                                       deadline_s=6))
    assert result.pushed and not result.promoted
    assert "canary rolled back: canary answered 0 of" in result.reason
    assert registry.serving().number == before and registry.canary() is None
    assert "re-export the model so both agree" in server.log.read_text()


@pytest.mark.serving
def test_canary_over_its_latency_slo_is_rolled_back(live, prepared):
    registry, _ = live
    before = registry.serving().number
    slo = canary.CanarySLO(percent=50, requests=40, min_canary_requests=5, max_p99_ms=0.01,
                           deadline_s=30)
    result = _rollout(live, prepared, prepared.model_dir, slo)
    assert not result.promoted and "ms above 0.01 ms" in result.reason
    assert registry.serving().number == before and registry.canary() is None
