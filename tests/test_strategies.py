"""Release strategies per stage: a server per stage answers with its own version; a shadow is
compared off the request path and promoted only when it agrees; blue-green checks the green at
its version's route, switches at once and rolls back with no reload; every outcome is recorded
in the version's record with its numbers."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import export_nan_model
from ctloop.components.rollout import logic
from ctloop.registry import PRODUCTION, STAGING, LocalRegistry, stages
from ctloop.serving import canary, client, release
from ctloop.serving import process as server_process
from ctloop.serving.shadow import ShadowRunner, agree
from ctloop.settings import Release

# -- the comparison rule and the bounded queue (no server) ---------------------------------------


def test_binary_agrees_on_the_predicted_label_and_never_on_nan():
    served = np.array([0.1, 0.6, 0.49, 0.9], dtype=np.float32)
    shadow = np.array([0.4, 0.51, 0.5, np.nan], dtype=np.float32)
    assert agree("binary", served, shadow).tolist() == [True, True, False, False]


def test_multiclass_agrees_on_the_most_probable_class():
    served = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    shadow = np.array([[0.5, 0.3, 0.2], [0.1, 0.4, 0.5]])
    assert agree("multiclass", served, shadow).tolist() == [True, False]


def test_regression_agrees_within_the_tolerance_band():
    served = np.array([100.0, 100.0, 0.0, 0.0])
    shadow = np.array([104.9, 106.0, 0.0009, 0.01])
    # 5 % of |served|, and 0.001 near zero
    assert agree("regression", served, shadow).tolist() == [True, False, True, False]


class _Loaded:
    version, task = "2", "binary"


def test_a_full_shadow_queue_drops_and_counts_without_waiting():
    release_scorer = threading.Event()

    def slow(_loaded, columns):
        release_scorer.wait(30)
        return columns["x"]

    runner = ShadowRunner(slow, max_queue=2)
    runner.reset("2")
    column = np.array([0.9], dtype=np.float32)
    taken = [runner.submit(_Loaded(), {"x": column}, column, "1") for _ in range(10)]
    # One is being scored (blocked), two wait: the rest were refused at once, not waited for.
    assert taken.count(True) in (2, 3) and runner.stats.dropped == taken.count(False)
    release_scorer.set()
    runner.join()
    stats = runner.stats.as_dict()
    assert stats["compared"] == stats["agreed"] == taken.count(True)
    assert stats["dropped"] + stats["compared"] == 10 and stats["p99_ms"] is not None


def test_a_failing_shadow_is_counted_not_raised():
    def broken(_loaded, _columns):
        raise RuntimeError("shadow broke\nsecond line")

    runner = ShadowRunner(broken)
    runner.reset("2")
    column = np.array([0.5], dtype=np.float32)
    runner.submit(_Loaded(), {"x": column}, column, "1")
    runner.join()
    assert runner.stats.errors == 1 and runner.stats.compared == 0
    assert runner.stats.last_error == "RuntimeError: shadow broke"


# -- verdicts over evidence (no server) ----------------------------------------------------------

SETTINGS = Release(strategy="shadow", shadow_requests=40, min_shadow_compared=20,
                   min_agreement=0.95, green_requests=20, deadline_s=30)


def _evidence(compared=40, rows_agreed=40, errors=0, p99=3.0, loaded=True):
    return release.Evidence(loaded=loaded, sent=compared, answered_by={"1": compared}, status={
        "shadow": {"version": "2", "compared": compared, "agreed": rows_agreed,
                   "rows_compared": compared, "rows_agreed": rows_agreed, "errors": errors,
                   "dropped": 0, "p50_ms": 1.0, "p99_ms": p99, "last_error": "boom"}})


@pytest.mark.parametrize(("evidence", "promoted", "reason"), [
    (_evidence(), True, "shadow agreed on 100.0% of 40 rows >= 95.0%"),
    (_evidence(rows_agreed=30), False, "shadow agreed on 75.0% of 40 rows, below 95.0%"),
    (_evidence(errors=1), False, "shadow failed 1 of 41 requests (2.4% > 0.0%): boom"),
    (_evidence(compared=10, rows_agreed=10), False, "shadow compared 10 requests (0 dropped), "
                                                    "fewer than the 20 needed"),
    (_evidence(p99=900.0), False, "shadow p99 900.0 ms above 250 ms"),
    (_evidence(loaded=False), False, "the server did not run version 2 as its shadow"),
])
def test_shadow_verdict(evidence, promoted, reason):
    promote, why, numbers = release.shadow_verdict(evidence, 2, SETTINGS)
    assert promote is promoted and why.startswith(reason), why
    assert numbers["compared"] == evidence.shadow.get("compared", 0)


def test_staging_report_awaits_approval_with_the_exact_command():
    decision = {"action": "deploy", "stage": STAGING, "strategy": "shadow", "promoted": True,
                "reason": "shadow promoted", "numbers": {"agreement": 0.99, "compared": 200}}
    result = logic.RolloutResult(True, "pushed as version 3; shadow promoted", 3, 2, True,
                                 {"target": "local", "serving_url": "http://127.0.0.1:1",
                                  "strategy": "shadow", "stage": STAGING, "decision": decision,
                                  "approve": logic.promote_command("churn", 3, "/r")})
    text = logic.report_markdown(result, "churn")
    assert "| agreement | 0.99 |" in text and "| stage | staging |" in text
    assert "**Awaiting approval**" in text
    assert ("ctloop promote churn 3 --to production --approved-by NAME --reason TEXT "
            "--registry /r" in text)


# -- against real servers ------------------------------------------------------------------------

# The latency SLOs are the shared machine's business, not these tests': judged by the unit tests.
LIVE = Release(strategy="shadow", shadow_requests=40, min_shadow_compared=20, green_requests=20,
               max_shadow_p99_ms=10_000, max_green_p99_ms=10_000, deadline_s=30)

@pytest.fixture(scope="module")
def live(prepared, serving_python, tmp_path_factory):
    """A registry serving version 1 in production, and a server following production that
    keeps a switched-from version warm for 300 s."""
    registry = LocalRegistry(tmp_path_factory.mktemp("strategies") / "registry", "churn")
    registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=None)
    log = tmp_path_factory.mktemp("strategies-log") / "server.log"
    with server_process.serve(serving_python, "churn", registry=str(registry.root),
                              log_path=str(log),
                              extra_args=["--poll-interval", "0.2", "--warm-seconds", "300"]
                              ) as server:
        server.wait_ready("churn", 120)
        yield registry, server


@pytest.fixture(scope="module")
def rows(prepared):
    return canary.rows(str(prepared.eval), str(prepared.model_dir), limit=50)


def _run(registry, prepared, model_dir, deploy, stage=PRODUCTION):
    return logic.run(str(model_dir), str(prepared.schema), True, 0, True, "blessed", True,
                     "infra-blessed", registry.serving().number, str(registry.root), "churn", {},
                     deploy, stage=stage)


def _decisions(registry, number):
    (version,) = [v for v in registry.versions() if v.number == number]
    return [d for d in version.record().get("decisions", []) if d.get("action") == "deploy"]


@pytest.mark.serving
def test_agreeing_shadow_is_promoted_and_clients_only_see_the_serving_version(
        live, prepared, rows):
    registry, server = live
    before = registry.serving().number
    result = _run(registry, prepared, prepared.model_dir,
                  logic.local_shadow(server.url, rows, LIVE))
    assert result.pushed and result.promoted, result.reason
    assert registry.serving().number == result.version and registry.shadow() is None
    (decision,) = _decisions(registry, result.version)
    numbers = decision["numbers"]
    assert decision["strategy"] == "shadow" and decision["stage"] == PRODUCTION
    assert decision["promoted"] is True
    # every client answer came from the serving version; the shadow only compared
    assert numbers["answered_by"] == {str(before): LIVE.shadow_requests}
    assert numbers["compared"] >= LIVE.min_shadow_compared and numbers["agreement"] == 1.0
    assert numbers["p99_ms"] is not None and numbers["errors"] == 0
    assert "shadow promoted: shadow agreed on 100.0%" in result.reason


@pytest.mark.serving
def test_disagreeing_shadow_is_not_promoted(live, prepared, rows, tmp_path):
    registry, server = live
    nan_model = tmp_path / "nan"
    export_nan_model(prepared, nan_model)
    before = registry.serving().number
    result = _run(registry, prepared, nan_model, logic.local_shadow(server.url, rows, LIVE))
    assert result.pushed and not result.promoted
    assert "shadow not promoted: shadow agreed on 0.0% of" in result.reason
    assert registry.serving().number == before and registry.shadow() is None
    (decision,) = _decisions(registry, result.version)
    assert decision["promoted"] is False and decision["numbers"]["agreement"] == 0.0
    # the clients never saw the NaN model
    answer = client.predict_raw(server.url, "churn", rows[:3])
    assert answer["model_version"] == str(before)
    assert all(np.isfinite(answer["predictions"]))


def _status(server):
    return client.release_status(server.url, "churn")


@pytest.mark.serving
def test_blue_green_checks_the_green_switches_at_once_and_rolls_back_without_a_reload(
        live, prepared, rows):
    registry, server = live
    before = registry.serving().number
    with pytest.raises(Exception, match="404"):  # no such version loaded: not addressable
        client.predict_version(server.url, "churn", "999", rows[:1])
    result = _run(registry, prepared, prepared.model_dir,
                  logic.local_blue_green(server.url, rows, LIVE))
    assert result.promoted, result.reason
    green = result.version
    (decision,) = _decisions(registry, green)
    numbers = decision["numbers"]
    assert decision["strategy"] == "blue_green" and numbers["server_switched"] is True
    # checked at its own route before the switch, every check answered by the green
    assert numbers["answered"] == numbers["sent"] == LIVE.green_requests
    assert numbers["errors"] == 0 and numbers["previous_version"] == before
    assert f"version {before} kept warm for 300 s" in result.reason
    assert result.details["rollback"] == (
        f"ctloop rollback churn --stage production --by NAME --reason TEXT --registry "
        f"{registry.root}")
    assert "a rollback within that time is served at once" in logic.report_markdown(
        result, "churn")
    # after the switch, all answers come from the green; the old version is warm
    assert {client.predict_raw(server.url, "churn", [row])["model_version"]
            for row in rows[:20]} == {str(green)}
    status = _status(server)
    assert str(before) in [w["version"] for w in status["warm"]]
    assert client.predict_version(server.url, "churn", str(before), rows[:1])[
        "model_version"] == str(before)
    loads = status["loads"]
    # the rollback (ctloop rollback's): the pointer back; the server swaps the warm version in,
    # no reload
    assert stages.rollback(registry, PRODUCTION, by="test", reason="check").number == before
    found, status = release.wait_for(server.url, "churn",
                                     lambda s: s["serving"] == str(before), 30)
    assert found and status["loads"] == loads
    assert client.predict_raw(server.url, "churn", rows[:2])["model_version"] == str(before)
    assert "kept warm for 300 s (a rollback to it needs no reload)" in server.log.read_text()


@pytest.mark.serving
def test_the_release_route_and_metrics_show_the_shadow(live):
    _, server = live
    status = _status(server)
    assert status["stage"] == PRODUCTION and status["warm_s"] == 300
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for name in ("ctloop_shadow_compared_total", "ctloop_shadow_dropped_total",
                 "ctloop_model_loads_total"):
        assert name in text
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{server.url}/v1/models/other/release", timeout=10)
    assert error.value.code == 404


@pytest.mark.serving
def test_a_server_per_stage_answers_with_its_own_version(prepared, serving_python, rows,
                                                         tmp_path):
    registry = LocalRegistry(tmp_path / "registry", "churn")
    registry.push(prepared.model_dir, prepared.schema, {}, expected_serving=None)
    # Into staging, with no server there yet: the version serves in staging at once.
    result = _run(registry, prepared, prepared.model_dir, None, stage=STAGING)
    assert result.promoted and registry.serving(stage=STAGING).number == 2
    assert registry.serving().number == 1
    (decision,) = _decisions(registry, 2)
    assert decision["stage"] == STAGING and decision["strategy"] == "direct"
    assert (f"ctloop promote churn 2 --to production --approved-by NAME --reason TEXT "
            f"--registry {registry.root}") in logic.report_markdown(result, "churn")
    with server_process.serve(serving_python, "churn", registry=str(registry.root),
                              extra_args=["--stage", STAGING]) as server:
        server.wait_ready("churn", 120)
        assert client.predict_raw(server.url, "churn", rows[:2])["model_version"] == "2"
        assert _status(server)["stage"] == STAGING
        # a shadow in staging runs on the staging server, over what staging serves
        settings = Release(strategy="shadow", shadow_requests=30, min_shadow_compared=20,
                           max_shadow_p99_ms=10_000, deadline_s=30)
        staged = logic.run(str(prepared.model_dir), str(prepared.schema), True, 0, True, "b",
                           True, "i", 1, str(registry.root), "churn", {},
                           logic.local_shadow(server.url, rows, settings, STAGING),
                           stage=STAGING)
        assert staged.promoted, staged.reason
        assert registry.serving(stage=STAGING).number == staged.version == 3
        assert registry.serving().number == 1  # production untouched
        assert json.loads(json.dumps(_decisions(registry, 3)))[0]["stage"] == STAGING
