"""The local model registry: atomic versions, the serving pointer, the push lock."""

import json
import multiprocessing
import os
import time

import pytest

from ctloop.errors import ConfigError, RegistryError, StaleBaselineError
from ctloop.registry import Registry


@pytest.fixture
def model(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "saved_model.pb").write_bytes(b"pb")
    (tmp_path / "schema.pbtxt").write_text("feature {}")
    return model_dir, tmp_path / "schema.pbtxt"


def test_push_numbers_versions_and_moves_pointer(tmp_path, model):
    registry = Registry(tmp_path / "reg", "churn")
    assert registry.serving() is None
    first = registry.push(*model, {"span": 1}, expected_serving=None)
    second = registry.push(*model, {"span": 2}, expected_serving=1)
    assert [v.number for v in registry.versions()] == [1, 2]
    assert registry.serving() == second
    assert second.record() == {"span": 2, "version": 2}
    assert (second.model_dir / "saved_model.pb").read_bytes() == b"pb"
    assert registry.set_serving(1) == first and registry.serving() == first


def test_push_without_serving_keeps_pointer(tmp_path, model):
    registry = Registry(tmp_path / "reg", "churn")
    registry.push(*model, {}, expected_serving=None)
    registry.push(*model, {}, expected_serving=1, serve=False)
    assert registry.serving().number == 1


def test_leftovers_of_a_killed_push_are_invisible_and_cleaned(tmp_path, model):
    registry = Registry(tmp_path / "reg", "churn")
    registry.push(*model, {}, expected_serving=None)
    stale = registry.path / "versions" / ".staging-deadbeef"
    (stale / "model").mkdir(parents=True)
    (registry.path / ".SERVING.deadbeef").write_text("{")
    assert [v.number for v in registry.versions()] == [1]
    assert registry.push(*model, {}, expected_serving=1).number == 2
    assert not stale.exists() and not (registry.path / ".SERVING.deadbeef").exists()


def test_push_refuses_a_stale_baseline(tmp_path, model):
    registry = Registry(tmp_path / "reg", "churn")
    registry.push(*model, {}, expected_serving=None)
    registry.push(*model, {}, expected_serving=1)
    # A model evaluated against version 1 must not replace version 2, pushed meanwhile.
    with pytest.raises(StaleBaselineError, match="now serves version 2, not version 1"):
        registry.push(*model, {}, expected_serving=1)
    assert [v.number for v in registry.versions()] == [1, 2]
    assert registry.serving().number == 2


def test_pointer_to_missing_version_is_an_error(tmp_path, model):
    registry = Registry(tmp_path / "reg", "churn")
    registry.push(*model, {}, expected_serving=None)
    (registry.path / "SERVING").write_text(json.dumps({"version": 9}))
    with pytest.raises(RegistryError, match="names version 9, which has no model"):
        registry.serving()
    with pytest.raises(RegistryError, match=r"version 7 does not exist .* choose one of \[1\]"):
        registry.set_serving(7)


def _hold_lock(root, ready, seconds):
    with Registry(root, "churn").lock():
        ready.set()
        time.sleep(seconds)


def test_concurrent_push_waits_then_fails_clearly(tmp_path, model):
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(tmp_path / "reg", ready, 3))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(RegistryError, match="is locked by another run"):
            Registry(tmp_path / "reg", "churn").push(*model, {}, expected_serving=None,
                                                     lock_timeout_s=0.5)
        assert Registry(tmp_path / "reg", "churn").versions() == []
    finally:
        holder.join(10)
    assert Registry(tmp_path / "reg", "churn").push(*model, {}, expected_serving=None).number == 1


@pytest.mark.parametrize("name", ["", "Churn", "../etc", "a/b", "-x", "x" * 64])
def test_model_name_must_be_dns_label(tmp_path, name):
    with pytest.raises(ConfigError, match="is invalid"):
        Registry(tmp_path, name)


def test_unreadable_pointer(tmp_path, model):
    registry = Registry(tmp_path / "reg", "churn")
    registry.push(*model, {}, expected_serving=None)
    (registry.path / "SERVING").write_text("{not json")
    with pytest.raises(RegistryError, match="is unreadable"):
        registry.serving()
    assert os.path.isdir(registry.path / "versions" / "1")


def test_statistics_store_returns_latest_earlier_span(tmp_path):
    registry = Registry(tmp_path / "reg", "churn")
    assert registry.previous_statistics(5) is None
    for span in (1, 3, 4):
        (tmp_path / f"{span}.bin").write_bytes(bytes([span]))
        registry.save_statistics(span, tmp_path / f"{span}.bin")
    span, path = registry.previous_statistics(4)
    assert span == 3 and path.read_bytes() == b"\x03"
    assert registry.previous_statistics(1) is None
    (tmp_path / "rerun.bin").write_bytes(b"new")
    registry.save_statistics(3, tmp_path / "rerun.bin")
    assert registry.previous_statistics(4)[1].read_bytes() == b"new"
    assert not list((registry.path / "statistics").glob(".*"))


def test_canary_promote_and_roll_back(tmp_path, model):
    registry = Registry(tmp_path / "reg", "churn")
    registry.push(*model, {}, expected_serving=None)
    registry.push(*model, {}, expected_serving=1, serve=False)
    assert registry.canary() is None
    registry.start_canary(2, 10, expected_serving=1)
    version, percent = registry.canary()
    assert (version.number, percent) == (2, 10) and registry.serving().number == 1
    assert registry.end_canary(promote=False).number == 1 and registry.canary() is None
    registry.start_canary(2, 25, expected_serving=1)
    assert registry.end_canary(promote=True).number == 2 and registry.canary() is None
    with pytest.raises(ConfigError, match="canary percent 0 is out of range"):
        registry.start_canary(2, 0, expected_serving=1)
    with pytest.raises(RegistryError, match="version 5 does not exist"):
        registry.start_canary(5, 10, expected_serving=1)


def test_two_runs_canaries_do_not_interleave(tmp_path, model):
    registry = Registry(tmp_path / "reg", "churn")
    registry.push(*model, {}, expected_serving=None)
    for _ in (2, 3):
        registry.push(*model, {}, expected_serving=1, serve=False)
    registry.start_canary(2, 20, expected_serving=1)  # run A's canary, under way
    with pytest.raises(RegistryError, match="has a canary of version 2 started 0 s ago by "
                                            "another run; wait for it to end"):
        registry.start_canary(3, 20, expected_serving=1)  # run B
    # Had B's canary replaced A's, A must not promote B's version.
    (registry.path / "CANARY").write_text(json.dumps({"version": 3, "percent": 20,
                                                      "started_unix": time.time()}))
    with pytest.raises(RegistryError, match="canary of version 2 .* was replaced by version 3"):
        registry.end_canary(promote=True, number=2)
    assert registry.serving().number == 1 and registry.canary()[0].number == 3


def test_a_canary_serves_only_over_the_version_it_was_judged_against(tmp_path, model):
    registry = Registry(tmp_path / "reg", "churn")
    registry.push(*model, {}, expected_serving=None)
    for _ in (2, 3, 4):  # three runs' candidates, each judged against version 1
        registry.push(*model, {}, expected_serving=1, serve=False)
    stale = (f"registry {registry.path} now serves version 2, not version 1 the model was "
             "evaluated against; rerun to evaluate against the new serving model")
    registry.start_canary(2, 20, expected_serving=1)
    assert registry.end_canary(promote=True, number=2).number == 2
    # Run B's canary would start after A's promote: refused, nothing changes.
    with pytest.raises(StaleBaselineError) as caught:
        registry.start_canary(3, 20, expected_serving=1)
    assert str(caught.value) == stale
    assert registry.canary() is None and registry.serving().number == 2
    # Run C's canary started over version 2; meanwhile another run promotes version 4 directly.
    registry.start_canary(3, 20, expected_serving=2)
    registry.set_serving(4)
    with pytest.raises(StaleBaselineError, match="now serves version 4, not version 2"):
        registry.end_canary(promote=True, number=3)
    assert registry.canary() is None and registry.serving().number == 4  # rolled back
    # Rolling back is allowed whatever serves meanwhile.
    registry.start_canary(3, 20, expected_serving=4)
    registry.set_serving(2)
    assert registry.end_canary(promote=False, number=3).number == 2
    assert registry.canary() is None


def test_a_killed_runs_canary_is_replaced_or_ended_by_a_promote(tmp_path, model):
    registry = Registry(tmp_path / "reg", "churn")
    registry.push(*model, {}, expected_serving=None)
    registry.push(*model, {}, expected_serving=1, serve=False)
    registry.push(*model, {}, expected_serving=1, serve=False)
    stale = {"version": 2, "percent": 20, "started_unix": time.time() - 3600}
    (registry.path / "CANARY").write_text(json.dumps(stale))
    # The stale one, from a run that died, is replaced.
    registry.start_canary(3, 10, expected_serving=1)
    assert registry.canary()[0].number == 3
    # A run killed between promoting its canary and removing it: promoting ends the canary.
    registry.set_serving(3)
    assert registry.canary() is None and registry.serving().number == 3
