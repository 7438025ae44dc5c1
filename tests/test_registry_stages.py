"""The registry's stages on both implementations (a folder, and S3 on moto's server through real
boto3): a pointer per stage with its history, the canary and the shadow of each stage, decisions
recorded on a version whole or not at all, and production left exactly as it was before stages
(its pointer is still ``SERVING``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import boto3
import pytest

from ctloop.errors import ConfigError, RegistryError, StaleBaselineError
from ctloop.registry import (
    PRODUCTION,
    STAGES,
    STAGING,
    LocalRegistry,
    Registry,
    S3Registry,
    pointer_file,
)
from ctloop.registry import baseline as baselines


class Store:
    """A registry's storage: ``open`` one (a new instance, as another task would), ``get`` and
    ``put`` a file under the model's folder as raw bytes (``get``: None if absent)."""

    def __init__(self, open_: Callable[[], Registry], get: Callable[[str], bytes | None],
                 put: Callable[[str, bytes], None]):
        self.open, self.get, self.put = open_, get, put


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        folder = tmp_path / "registry" / "churn"

        def get_local(name: str) -> bytes | None:
            return (folder / name).read_bytes() if (folder / name).exists() else None

        def put_local(name: str, body: bytes) -> None:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(body)

        return Store(lambda: LocalRegistry(tmp_path / "registry", "churn"), get_local, put_local)
    bucket = request.getfixturevalue("s3_bucket")
    client = boto3.client("s3", endpoint_url=bucket.endpoint_url)
    opened = []

    def open_s3() -> S3Registry:
        opened.append(S3Registry(f"{bucket.uri}/registry", "churn", bucket.endpoint_url,
                                 cache_dir=tmp_path / f"cache-{len(opened)}"))
        return opened[-1]

    def get_s3(name: str) -> bytes | None:
        try:
            return client.get_object(Bucket=bucket.uri[5:],
                                     Key=f"registry/churn/{name}")["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    def put_s3(name: str, body: bytes) -> None:
        client.put_object(Bucket=bucket.uri[5:], Key=f"registry/churn/{name}", Body=body)

    return Store(open_s3, get_s3, put_s3)


@pytest.fixture
def model(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "saved_model.pb").write_bytes(b"pb")
    (tmp_path / "schema.pbtxt").write_text("feature {}")
    return model_dir, tmp_path / "schema.pbtxt"


def versions(store: Store, model, count: int) -> Registry:
    """``count`` versions, none served."""
    registry = store.open()
    for _ in range(count):
        registry.push(*model, {"metrics": {"auc": 0.8}}, expected_serving=None, serve=False)
    return registry


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.strip() == message, message
    return message


def test_the_pointer_files_of_each_stage():
    assert STAGES == (STAGING, PRODUCTION) == ("staging", "production")
    assert [pointer_file(kind, PRODUCTION) for kind in ("serving", "canary", "shadow")] == [
        "SERVING", "CANARY", "SHADOW"]
    assert [pointer_file(kind, STAGING) for kind in ("serving", "canary", "shadow")] == [
        "STAGING", "STAGING.CANARY", "STAGING.SHADOW"]


def test_an_unknown_stage_is_a_one_line_config_error(store, model):
    registry = versions(store, model, 1)
    calls = [lambda: registry.serving("prod"), lambda: registry.set_serving(1, stage="prod"),
             lambda: registry.push(*model, {}, expected_serving=None, stage="prod"),
             lambda: registry.start_shadow(1, expected_serving=None, stage="prod"),
             lambda: pointer_file("serving", "prod")]
    for call in calls:
        with pytest.raises(ConfigError) as caught:
            call()
        assert one_line(caught) == "stage 'prod' is unknown: use one of staging, production"
    assert [v.number for v in registry.versions()] == [1] and registry.serving() is None


def test_each_stage_has_its_own_pointer(store, model):
    registry = store.open()
    registry.push(*model, {}, expected_serving=None, stage=STAGING)
    assert registry.serving(STAGING).number == 1 and registry.serving() is None
    assert store.get("SERVING") is None and json.loads(store.get("STAGING"))["version"] == 1
    registry.push(*model, {}, expected_serving=None)  # production, as every caller before stages
    reader = store.open()
    assert reader.serving().number == 2 and reader.serving(PRODUCTION).number == 2
    assert reader.serving(STAGING).number == 1
    # expected_serving is checked against the stage's own pointer.
    with pytest.raises(StaleBaselineError, match=r"\(staging\) now serves version 1, not "
                                                 "version 2"):
        registry.push(*model, {}, expected_serving=2, stage=STAGING)
    assert registry.push(*model, {}, expected_serving=1, stage=STAGING).number == 3
    assert registry.set_serving(2, expected_serving=3, stage=STAGING).number == 2
    assert (reader.serving(STAGING).number, reader.serving().number) == (2, 2)


def test_a_pointer_remembers_what_it_named(store, model):
    registry = versions(store, model, 3)
    assert registry.history() == []
    for number in (1, 2, 2, 3):  # pointing at what it names already adds nothing
        registry.set_serving(number)
    assert store.open().history() == [1, 2] and store.open().history(STAGING) == []
    written = json.loads(store.get("SERVING"))
    assert (written["version"], written["previous"]) == (3, [1, 2])
    # A pointer written before history was: read as it was, and its history starts now.
    store.put("SERVING", json.dumps({"version": 1}).encode())
    reader = store.open()
    assert reader.serving().number == 1 and reader.history() == []
    reader.set_serving(3)
    assert reader.history() == [1]


def test_the_history_is_bounded(store, model, monkeypatch):
    from ctloop.registry import pointers

    monkeypatch.setattr(pointers, "HISTORY_LENGTH", 3)
    registry = versions(store, model, 2)
    for number in (1, 2, 1, 2, 1, 2):
        registry.set_serving(number)
    assert registry.history() == [1, 2, 1]  # the last three


def test_a_canary_in_staging_leaves_production_alone(store, model):
    registry = versions(store, model, 2)
    registry.set_serving(1, stage=STAGING)
    registry.set_serving(1)
    registry.start_canary(2, 10, expected_serving=1, stage=STAGING)
    assert registry.canary() is None and store.get("CANARY") is None
    version, percent = store.open().canary(STAGING)
    assert (version.number, percent) == (2, 10)
    assert json.loads(store.get("STAGING.CANARY"))["over"] == 1
    assert registry.end_canary(promote=True, number=2, stage=STAGING).number == 2
    assert registry.serving().number == 1 and registry.canary(STAGING) is None
    assert registry.history(STAGING) == [1]


def test_a_shadow_promoted_or_dropped(store, model):
    registry = versions(store, model, 3)
    registry.set_serving(1, stage=STAGING)
    assert registry.shadow(STAGING) is None
    registry.start_shadow(2, expected_serving=1, stage=STAGING)
    shadow = json.loads(store.get("STAGING.SHADOW"))
    assert (shadow["version"], shadow["over"]) == (2, 1) and "percent" not in shadow
    assert shadow["started_unix"] == pytest.approx(time.time(), abs=60)
    assert store.open().shadow(STAGING).number == 2 and registry.shadow() is None
    # Dropped: the stage serves what it served; the shadow is gone.
    assert registry.end_shadow(promote=False, number=2, stage=STAGING).number == 1
    assert registry.shadow(STAGING) is None and store.get("STAGING.SHADOW") is None
    # Promoted: the stage's pointer moves to it, remembering version 1.
    registry.start_shadow(2, expected_serving=1, stage=STAGING)
    assert registry.end_shadow(promote=True, number=2, stage=STAGING).number == 2
    assert registry.shadow(STAGING) is None and registry.history(STAGING) == [1]
    # In production, its files are SERVING and SHADOW.
    registry.set_serving(2)
    registry.start_shadow(3, expected_serving=2)
    assert json.loads(store.get("SHADOW"))["version"] == 3
    assert registry.end_shadow(promote=True).number == 3 and store.get("SHADOW") is None


def test_a_shadow_follows_the_canarys_rules(store, model):
    registry = versions(store, model, 4)
    registry.set_serving(1)
    with pytest.raises(StaleBaselineError, match="now serves version 1, not version 2"):
        registry.start_shadow(2, expected_serving=2)
    registry.start_shadow(2, expected_serving=1)  # run A's, under way
    with pytest.raises(RegistryError) as caught:
        store.open().start_shadow(3, expected_serving=1)  # run B's
    assert "has a shadow of version 2 started 0 s ago by another run" in one_line(caught)
    with pytest.raises(RegistryError, match="shadow of version 3 .* was replaced by version 2"):
        registry.end_shadow(promote=True, number=3)
    # A killed run's shadow is replaced.
    store.put("SHADOW", json.dumps({"version": 2, "over": 1,
                                    "started_unix": time.time() - 3600}).encode())
    registry.start_shadow(3, expected_serving=1)
    assert registry.shadow().number == 3
    # Promoted only over the version it started over; ended (removed) either way.
    store.open().set_serving(4)
    with pytest.raises(StaleBaselineError, match="now serves version 4, not version 1"):
        registry.end_shadow(promote=True, number=3)
    assert registry.shadow() is None and registry.serving().number == 4
    # Nothing to promote: one line, nothing moves.
    with pytest.raises(RegistryError) as caught:
        registry.end_shadow(promote=True, stage=STAGING)
    assert one_line(caught).startswith(f"registry {registry.uri} has no staging shadow")
    assert "start_shadow" in str(caught.value)
    # Moving the pointer to the shadow's version ends the shadow (a run killed promoting it).
    registry.start_shadow(2, expected_serving=4)
    registry.set_serving(2)
    assert registry.shadow() is None


def test_a_broken_shadow_pointer_is_a_one_line_registry_error(store, model):
    versions(store, model, 1)
    store.put("STAGING.SHADOW", b'{"over": 1}')
    with pytest.raises(RegistryError) as caught:
        store.open().shadow(STAGING)
    assert "STAGING.SHADOW" in one_line(caught) and "delete it to end the shadow" in str(
        caught.value)


def test_decisions_are_appended_to_the_record(store, model):
    registry = versions(store, model, 2)
    before = registry.versions()[0].record()  # read (and, on S3, downloaded) before
    registry.record_decision(1, {"action": "deploy", "stage": STAGING, "outcome": "shadow ok"})
    registry.set_serving(1, decision={"action": "promote", "stage": PRODUCTION,
                                      "approved_by": "ana", "at_unix": 5.0})
    for reader in (registry, store.open()):
        record = reader.versions()[0].record()
        decisions = record.pop("decisions")
        assert record == before  # nothing else changed
        assert [d["action"] for d in decisions] == ["deploy", "promote"]
        assert decisions[0]["at_unix"] == pytest.approx(time.time(), abs=60)
        assert decisions[1] == {"action": "promote", "stage": "production",
                                "approved_by": "ana", "at_unix": 5.0}
    assert "decisions" not in store.open().read_record(2)
    with pytest.raises(RegistryError, match="version 9 does not exist"):
        registry.record_decision(9, {"action": "promote"})


def test_decisions_do_not_change_the_baselines_fingerprint(store, model):
    registry = versions(store, model, 1)
    registry.set_serving(1)
    first = baselines.fingerprint(store.open().serving(), None)
    registry.record_decision(1, {"action": "promote"})
    assert baselines.fingerprint(store.open().serving(), None) == first


def test_a_decision_is_recorded_whole_or_not_at_all(tmp_path, model, monkeypatch):
    registry = LocalRegistry(tmp_path / "registry", "churn")
    registry.push(*model, {"span": 1}, expected_serving=None)
    record = tmp_path / "registry" / "churn" / "versions" / "1" / "record.json"
    before = record.read_bytes()

    def killed(*args):
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(OSError):
        registry.record_decision(1, {"action": "promote"})
    monkeypatch.undo()
    assert record.read_bytes() == before  # the old record, whole
    assert list(record.parent.glob(".record.json.*"))  # what the killed writer left
    registry.push(*model, {}, expected_serving=1)  # the next writer cleans it
    assert not list(record.parent.glob(".record.json.*"))
    assert registry.versions()[0].record() == json.loads(before)
