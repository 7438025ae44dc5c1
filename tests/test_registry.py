"""The local model registry beyond what every registry promises (tests/test_registry_contract.py):
leftovers of killed pushes, the flock push lock, temporary files."""

import multiprocessing
import time

import pytest

from ctloop.errors import RegistryError
from ctloop.registry import LocalRegistry


@pytest.fixture
def model(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "saved_model.pb").write_bytes(b"pb")
    (tmp_path / "schema.pbtxt").write_text("feature {}")
    return model_dir, tmp_path / "schema.pbtxt"


def test_leftovers_of_a_killed_push_are_invisible_and_cleaned(tmp_path, model):
    registry = LocalRegistry(tmp_path / "reg", "churn")
    registry.push(*model, {}, expected_serving=None)
    stale = registry.path / "versions" / ".staging-deadbeef"
    (stale / "model").mkdir(parents=True)
    (registry.path / ".SERVING.deadbeef").write_text("{")
    assert [v.number for v in registry.versions()] == [1]
    assert registry.push(*model, {}, expected_serving=1).number == 2
    assert not stale.exists() and not (registry.path / ".SERVING.deadbeef").exists()


def _hold_lock(root, ready, seconds):
    with LocalRegistry(root, "churn").lock():
        ready.set()
        time.sleep(seconds)


def test_concurrent_push_waits_then_fails_clearly(tmp_path, model):
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(tmp_path / "reg", ready, 3))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(RegistryError, match="is locked by another run"):
            LocalRegistry(tmp_path / "reg", "churn").push(*model, {}, expected_serving=None,
                                                          lock_timeout_s=0.5)
        assert LocalRegistry(tmp_path / "reg", "churn").versions() == []
    finally:
        holder.join(10)
    registry = LocalRegistry(tmp_path / "reg", "churn")
    assert registry.push(*model, {}, expected_serving=None).number == 1


def test_no_temporary_file_is_left_by_statistics_or_pointers(tmp_path, model):
    registry = LocalRegistry(tmp_path / "reg", "churn")
    registry.push(*model, {}, expected_serving=None)
    registry.push(*model, {}, expected_serving=1, serve=False)
    for span in (1, 1, 2):
        (tmp_path / "stats.bin").write_bytes(bytes([span]))
        registry.save_statistics(span, tmp_path / "stats.bin")
    registry.start_canary(2, 10, expected_serving=1)
    registry.end_canary(promote=True, number=2)
    assert [p.name for p in registry.path.rglob(".*")] == [".lock"]


def test_the_lock_of_a_folder_cannot_be_lost_while_held(tmp_path):
    with LocalRegistry(tmp_path / "reg", "churn").lock() as lease:
        lease.check("anything")  # an flock is held until released: never raises
