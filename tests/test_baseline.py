"""The baseline of a run (serving version, schema, drift reference): read from the registry once,
fingerprinted, and loaded into artifacts only while it is unchanged."""

import pytest

from ctloop.errors import RegistryError
from ctloop.registry import baseline as logic
from ctloop.registry import open_registry

MODEL_NAME = "churn"


@pytest.fixture
def files(tmp_path):
    """A model folder (any files: the resolver copies, it does not load), a schema, and two
    statistics files."""
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "variables.index").write_bytes(b"index")
    schema = tmp_path / "schema.pbtxt"
    schema.write_text('feature { name: "age" }\n')
    stats = []
    for span in (1, 2):
        path = tmp_path / f"span-{span}.stats"
        path.write_bytes(f"statistics of span {span}".encode())
        stats.append(path)
    return model, schema, stats


def _registry(tmp_path):
    return open_registry(str(tmp_path / "registry"), MODEL_NAME)


def _outputs(tmp_path, name="out"):
    return logic.OutputPaths(model_dir=str(tmp_path / name / "model"),
                             schema_dir=str(tmp_path / name / "schema"),
                             statistics_dir=str(tmp_path / name / "statistics"))


def test_cold_start_resolves_no_version_and_no_statistics(tmp_path):
    found = logic.resolve(str(tmp_path / "registry"), MODEL_NAME, span=1)
    assert (found.number, found.statistics) == (None, None)
    assert found.describe().startswith("no serving version (cold start) of ")
    meta = logic.load(found, found.fingerprint, _outputs(tmp_path))
    assert meta["version"] is None and meta["statistics_span"] is None and meta["record"] == {}
    out = tmp_path / "out"
    # The artifacts exist (KFP uploads a folder), empty.
    assert [p.name for p in out.iterdir()] and not any(p.is_file() for p in out.rglob("*"))
    again = logic.resolve(str(tmp_path / "registry"), MODEL_NAME, span=1)
    assert again.fingerprint == found.fingerprint


def test_serving_version_and_the_latest_earlier_statistics_are_loaded(files, tmp_path):
    model, schema, (stats_1, stats_2) = files
    registry = _registry(tmp_path)
    registry.push(model, schema, {"span": 1, "metrics": {"auc": 0.8}, "other": "not copied"},
                  expected_serving=None)
    registry.save_statistics(1, stats_1)
    registry.save_statistics(2, stats_2)

    found = logic.resolve(str(tmp_path / "registry"), MODEL_NAME, span=2)
    assert (found.number, found.statistics_span) == (1, 1)  # span 2's own are not a reference
    meta = logic.load(found, found.fingerprint, _outputs(tmp_path))
    out = tmp_path / "out"
    assert (out / "model" / "saved_model.pb").read_bytes() == b"graph"
    assert (out / "model" / "variables" / "variables.index").read_bytes() == b"index"
    assert (out / "schema" / logic.SCHEMA_FILE).read_text() == schema.read_text()
    assert (out / "statistics" / logic.STATISTICS_FILE).read_bytes() == stats_1.read_bytes()
    assert meta == {"version": 1, "registry": registry.uri, "fingerprint": found.fingerprint,
                    "statistics_span": 1,
                    "record": {"span": 1, "metrics": {"auc": 0.8}}}
    # Span 0 (data without spans): no drift reference.
    assert logic.resolve(str(tmp_path / "registry"), MODEL_NAME, span=0).statistics is None


def test_fingerprint_changes_with_the_version_and_the_statistics_bytes(files, tmp_path):
    model, schema, (stats_1, stats_2) = files
    registry = _registry(tmp_path)

    def fingerprint():
        return logic.resolve(str(tmp_path / "registry"), MODEL_NAME, span=3).fingerprint

    seen = [fingerprint()]
    registry.push(model, schema, {"span": 1}, expected_serving=None)
    seen.append(fingerprint())
    registry.save_statistics(1, stats_1)
    seen.append(fingerprint())
    registry.save_statistics(1, stats_2)  # a rerun of span 1 replaced its statistics
    seen.append(fingerprint())
    registry.push(model, schema, {"span": 2}, expected_serving=1)
    seen.append(fingerprint())
    assert len(set(seen)) == len(seen)
    assert fingerprint() == seen[-1]  # nothing changed: the same


def test_load_fails_when_the_registry_changed_since_resolve(files, tmp_path):
    model, schema, _ = files
    registry = _registry(tmp_path)
    found = logic.resolve(str(tmp_path / "registry"), MODEL_NAME, span=1)
    registry.push(model, schema, {"span": 1}, expected_serving=None)  # another run pushed
    now = logic.resolve(str(tmp_path / "registry"), MODEL_NAME, span=1)
    with pytest.raises(RegistryError) as caught:
        logic.load(now, found.fingerprint, _outputs(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("the registry changed while this run "
                                                      "started")
    assert "version 1 of" in message and message.endswith("rerun to judge against it")
    assert not (tmp_path / "out" / "model").exists()


def test_s3_registry_is_resolved_and_loaded(files, s3_bucket, tmp_path):
    model, schema, (stats_1, _) = files
    uri = f"{s3_bucket.uri}/registry"
    registry = open_registry(uri, MODEL_NAME, s3_bucket.endpoint_url)
    registry.push(model, schema, {"span": 1}, expected_serving=None)
    registry.save_statistics(1, stats_1)

    found = logic.resolve(uri, MODEL_NAME, 2, s3_bucket.endpoint_url)
    assert (found.number, found.statistics_span) == (1, 1)
    # Resolving runs uncached on every run: it reads the pointer and the record, not the model.
    assert not (found.version.path / "model").exists()
    again = logic.resolve(uri, MODEL_NAME, 2, s3_bucket.endpoint_url)
    assert again.fingerprint == found.fingerprint
    logic.load(again, found.fingerprint, _outputs(tmp_path))
    assert (tmp_path / "out" / "model" / "saved_model.pb").read_bytes() == b"graph"
    assert (tmp_path / "out" / "statistics" / logic.STATISTICS_FILE).read_bytes() == (
        stats_1.read_bytes())

