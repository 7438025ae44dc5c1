"""What every registry promises (``ctloop.registry.Registry``), checked on both implementations
with the same tests: the folder one (``LocalRegistry``) and the S3 one (``S3Registry``, on moto's
S3 server through real boto3). Numbered versions, the serving pointer, the canary, stale
baselines, the statistics of earlier spans, and one-line errors for what is broken."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

import boto3
import pytest

from ctloop.errors import ConfigError, RegistryError, StaleBaselineError
from ctloop.registry import LocalRegistry, Registry, S3Registry


@dataclasses.dataclass(frozen=True)
class Store:
    """One registry's storage: ``open`` a registry on it (a new instance, as another task
    would), ``put`` a file of the registry (its name under the model's folder) as raw bytes."""

    kind: str
    open: Callable[[], Registry]
    put: Callable[[str, bytes], None]


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        root = tmp_path / "registry"

        def put_local(name: str, body: bytes) -> None:
            (root / "churn" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "churn" / name).write_bytes(body)

        return Store("local", lambda: LocalRegistry(root, "churn"), put_local)
    bucket = request.getfixturevalue("s3_bucket")
    client = boto3.client("s3", endpoint_url=bucket.endpoint_url)
    opened = []

    def open_s3() -> S3Registry:
        opened.append(S3Registry(f"{bucket.uri}/registry", "churn", bucket.endpoint_url,
                                 cache_dir=tmp_path / f"cache-{len(opened)}"))
        return opened[-1]

    def put_s3(name: str, body: bytes) -> None:
        client.put_object(Bucket=bucket.uri[5:], Key=f"registry/churn/{name}", Body=body)

    return Store("s3", open_s3, put_s3)


@pytest.fixture
def model(tmp_path):
    model_dir = tmp_path / "model"
    (model_dir / "variables").mkdir(parents=True)
    (model_dir / "saved_model.pb").write_bytes(b"pb")
    (model_dir / "variables" / "variables.index").write_bytes(b"index")
    (tmp_path / "schema.pbtxt").write_text("feature {}")
    return model_dir, tmp_path / "schema.pbtxt"


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.strip() == message, message
    return message


def test_both_implement_the_protocol(store):
    registry = store.open()
    assert isinstance(registry, Registry)
    assert registry.model_name == "churn" and registry.uri.rstrip("/").endswith("churn")


def test_push_numbers_versions_and_moves_the_pointer(store, model):
    registry = store.open()
    assert registry.serving() is None and registry.versions() == []
    first = registry.push(*model, {"span": 1}, expected_serving=None)
    second = registry.push(*model, {"span": 2}, expected_serving=1)
    reader = store.open()  # another task: sees what the writer pushed
    assert [v.number for v in reader.versions()] == [1, 2]
    serving = reader.serving()
    assert serving.number == 2 and registry.serving() == second
    assert serving.record() == {"span": 2, "version": 2}
    assert [v.record()["span"] for v in reader.versions()] == [1, 2]
    assert (serving.model_dir / "variables" / "variables.index").read_bytes() == b"index"
    assert serving.schema_path.read_text() == "feature {}"
    assert registry.set_serving(1) == first and store.open().serving().number == 1


def test_push_without_serving_keeps_the_pointer(store, model):
    registry = store.open()
    registry.push(*model, {}, expected_serving=None)
    assert registry.push(*model, {}, expected_serving=1, serve=False).number == 2
    assert store.open().serving().number == 1


def test_push_refuses_a_stale_baseline(store, model):
    registry = store.open()
    registry.push(*model, {}, expected_serving=None)
    registry.push(*model, {}, expected_serving=1)
    # A model evaluated against version 1 must not replace version 2, pushed meanwhile.
    with pytest.raises(StaleBaselineError, match="now serves version 2, not version 1"):
        registry.push(*model, {}, expected_serving=1)
    assert [v.number for v in registry.versions()] == [1, 2]
    assert registry.serving().number == 2


def test_set_serving_only_over_the_expected_version(store, model):
    registry = store.open()
    registry.push(*model, {}, expected_serving=None)
    registry.push(*model, {}, expected_serving=1, serve=False)
    with pytest.raises(StaleBaselineError, match="now serves version 1, not version 2"):
        registry.set_serving(2, expected_serving=2)
    assert registry.set_serving(2, expected_serving=1).number == 2
    with pytest.raises(RegistryError, match=r"version 7 does not exist in .*; choose one of "
                                            r"\[1, 2\]"):
        registry.set_serving(7)


@pytest.mark.parametrize("pointer", [b"{not json", b"{}", b'{"updated_unix": 1}',
                                     b'{"version": "two"}', b"[1]", b"null"],
                         ids=["not-json", "empty", "no-version", "text", "list", "null"])
def test_a_broken_serving_pointer_is_a_one_line_registry_error(store, model, pointer):
    registry = store.open()
    registry.push(*model, {}, expected_serving=None)
    store.put("SERVING", pointer)
    with pytest.raises(RegistryError) as caught:
        store.open().serving()
    message = one_line(caught)
    assert "SERVING" in message and "delete it to start cold" in message
    with pytest.raises(RegistryError):  # nothing is judged against a pointer no one can read
        registry.push(*model, {}, expected_serving=1)
    assert [v.number for v in registry.versions()] == [1]


def test_a_pointer_to_a_missing_version_is_an_error(store, model):
    store.open().push(*model, {}, expected_serving=None)
    store.put("SERVING", json.dumps({"version": 9}).encode())
    with pytest.raises(RegistryError, match="names version 9, which") as caught:
        store.open().serving()
    assert "point it at a complete version" in one_line(caught)


@pytest.mark.parametrize("name", ["", "Churn", "../etc", "a/b", "-x", "x" * 64])
def test_model_name_must_be_a_dns_label(name, tmp_path):
    for make in (lambda: LocalRegistry(tmp_path, name),
                 lambda: S3Registry("s3://bucket/registry", name)):
        with pytest.raises(ConfigError, match="is invalid"):
            make()


def test_statistics_of_the_latest_earlier_span(store, tmp_path):
    registry = store.open()
    assert registry.previous_statistics(5) is None
    for span in (1, 3, 4):
        (tmp_path / f"{span}.bin").write_bytes(bytes([span]))
        registry.save_statistics(span, tmp_path / f"{span}.bin")
    span, path = store.open().previous_statistics(4)
    assert span == 3 and path.read_bytes() == b"\x03"
    assert store.open().previous_statistics(1) is None
    (tmp_path / "rerun.bin").write_bytes(b"new")
    registry.save_statistics(3, tmp_path / "rerun.bin")
    assert store.open().previous_statistics(4)[1].read_bytes() == b"new"


# --- the canary ----------------------------------------------------------------------------------


def two_versions(store, model) -> Registry:
    registry = store.open()
    registry.push(*model, {}, expected_serving=None)
    registry.push(*model, {}, expected_serving=1, serve=False)
    return registry


def test_canary_promote_and_roll_back(store, model):
    registry = two_versions(store, model)
    assert registry.canary() is None
    registry.start_canary(2, 10, expected_serving=1)
    version, percent = store.open().canary()
    assert (version.number, percent) == (2, 10) and registry.serving().number == 1
    assert (version.model_dir / "saved_model.pb").read_bytes() == b"pb"
    assert registry.end_canary(promote=False).number == 1 and registry.canary() is None
    registry.start_canary(2, 25, expected_serving=1)
    assert registry.end_canary(promote=True).number == 2 and registry.canary() is None
    assert store.open().serving().number == 2
    with pytest.raises(ConfigError, match="canary percent 0 is out of range"):
        registry.start_canary(2, 0, expected_serving=1)
    with pytest.raises(RegistryError, match="version 5 does not exist"):
        registry.start_canary(5, 10, expected_serving=2)


@pytest.mark.parametrize("number", [None, 2])
def test_promoting_when_no_canary_runs_is_a_one_line_error(store, model, number):
    registry = two_versions(store, model)
    with pytest.raises(RegistryError) as caught:
        registry.end_canary(promote=True, number=number)
    message = one_line(caught)
    assert message.startswith(f"registry {registry.uri} has no canary")
    assert "nothing was promoted" in message and "start_canary" in message
    assert registry.serving().number == 1 and registry.canary() is None
    # Ending one that is not there without promoting is no change, and says what serves.
    assert registry.end_canary(promote=False, number=number).number == 1


def test_two_runs_canaries_do_not_interleave(store, model):
    registry = two_versions(store, model)
    registry.push(*model, {}, expected_serving=1, serve=False)
    registry.start_canary(2, 20, expected_serving=1)  # run A's canary, under way
    with pytest.raises(RegistryError, match="has a canary of version 2 started 0 s ago by "
                                            "another run; wait for it to end"):
        store.open().start_canary(3, 20, expected_serving=1)  # run B
    # Had B's canary replaced A's, A must not promote B's version.
    store.put("CANARY", json.dumps({"version": 3, "percent": 20,
                                    "started_unix": time.time()}).encode())
    with pytest.raises(RegistryError, match="canary of version 2 .* was replaced by version 3"):
        registry.end_canary(promote=True, number=2)
    assert registry.serving().number == 1 and registry.canary()[0].number == 3


def test_a_canary_serves_only_over_the_version_it_was_judged_against(store, model):
    registry = two_versions(store, model)
    for _ in (3, 4):  # three runs' candidates, each judged against version 1
        registry.push(*model, {}, expected_serving=1, serve=False)
    stale = (f"registry {registry.uri} now serves version 2, not version 1 the model was "
             "evaluated against; rerun to evaluate against the new serving model")
    registry.start_canary(2, 20, expected_serving=1)
    assert registry.end_canary(promote=True, number=2).number == 2
    # Run B's canary would start after A's promote: refused, nothing changes.
    with pytest.raises(StaleBaselineError) as caught:
        store.open().start_canary(3, 20, expected_serving=1)
    assert str(caught.value) == stale
    assert registry.canary() is None and registry.serving().number == 2
    # Run C's canary started over version 2; meanwhile another run promotes version 4 directly.
    registry.start_canary(3, 20, expected_serving=2)
    store.open().set_serving(4)
    with pytest.raises(StaleBaselineError, match="now serves version 4, not version 2"):
        registry.end_canary(promote=True, number=3)
    assert registry.canary() is None and registry.serving().number == 4  # rolled back
    # Rolling back is allowed whatever serves meanwhile.
    registry.start_canary(3, 20, expected_serving=4)
    registry.set_serving(2)
    assert registry.end_canary(promote=False, number=3).number == 2
    assert registry.canary() is None


def test_a_killed_runs_canary_is_replaced_or_ended_by_a_promote(store, model):
    registry = two_versions(store, model)
    registry.push(*model, {}, expected_serving=1, serve=False)
    store.put("CANARY", json.dumps({"version": 2, "percent": 20,
                                    "started_unix": time.time() - 3600}).encode())
    # The stale one, from a run that died, is replaced.
    registry.start_canary(3, 10, expected_serving=1)
    assert registry.canary()[0].number == 3
    # A run killed between promoting its canary and removing it: promoting ends the canary.
    registry.set_serving(3)
    assert registry.canary() is None and registry.serving().number == 3


@pytest.mark.parametrize("pointer", [b"{oops", b'{"percent": 10}', b'{"version": 2}',
                                     b'{"version": 2, "percent": "ten"}'],
                         ids=["not-json", "no-version", "no-percent", "text-percent"])
def test_a_broken_canary_pointer_is_a_one_line_registry_error(store, model, pointer):
    two_versions(store, model)
    store.put("CANARY", pointer)
    with pytest.raises(RegistryError) as caught:
        store.open().canary()
    assert "CANARY" in one_line(caught) and "delete it to end the canary" in str(caught.value)
