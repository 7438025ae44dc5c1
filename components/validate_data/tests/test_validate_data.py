"""validate_data logic with real TFDV: statistics, schema precedence, anomalies, views."""

import base64
import re

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from conftest import EXCLUDE, LABEL
from ctloop.components.ingest import logic as ingest
from ctloop.components.validate_data import logic
from ctloop.errors import ConfigError


def _validate(train, evaluation, out, curated=None, serving=None):
    return logic.run(str(train), str(evaluation), 3, curated, serving, str(out / "stats"),
                     str(out / "schema.pbtxt"), str(out / "anomalies"), str(out / "stats.html"),
                     str(out / "anomalies.md"))


def test_cold_start_infers_schema_and_writes_views(prepared):
    work = prepared.train.parent
    schema = tfdv.load_schema_text(str(prepared.schema))
    types = {f.name: f.type for f in schema.feature}
    assert types["plan"] == schema_pb2.BYTES and types["income"] == schema_pb2.FLOAT
    assert {"age", "income", "plan", "region", LABEL} <= set(types)
    stats = tfdv.load_stats_binary(str(work / "stats" / "train.stats.tfrecord"))
    assert stats.datasets[0].num_examples > 2000
    # The view is TFDV's Facets Overview with both splits' statistics embedded as a base64 proto.
    html = (work / "stats.html").read_text()
    embedded = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        base64.b64decode(re.search(r'proto-input="([^"]+)"', html).group(1)))
    assert [d.name for d in embedded.datasets] == ["span 1 train", "span 1 eval"]
    assert "No anomalies" in (work / "anomalies.md").read_text()


def test_corrupt_span_against_serving_schema_blocks(prepared, tmp_path):
    ingest.run(str(prepared.data_dir / "span-3"), LABEL, EXCLUDE, 20, str(tmp_path / "t.parquet"),
               str(tmp_path / "e.parquet"))
    result = _validate(tmp_path / "t.parquet", tmp_path / "e.parquet", tmp_path,
                       serving=str(prepared.schema))
    assert not result.valid
    assert result.schema_source.startswith("serving model")
    flagged = {(a.feature, a.split) for a in result.anomalies}
    assert ("plan", "train") in flagged and ("plan", "eval") in flagged
    report = (tmp_path / "anomalies.md").read_text()
    assert "deployment is blocked" in report and "PREMIUM+" in report
    anomalies = tfdv.load_anomalies_text(str(tmp_path / "anomalies" / "train.anomalies.pbtxt"))
    assert "plan" in anomalies.anomaly_info


def test_curated_schema_wins_over_serving_schema(prepared, tmp_path):
    curated = tfdv.load_schema_text(str(prepared.schema))
    # Pin a domain the data violates: the curated schema must be the one applied.
    tfdv.get_domain(curated, "contract").value[:] = ["month-to-month"]
    tfdv.write_schema_text(curated, str(tmp_path / "curated.pbtxt"))
    result = _validate(prepared.train, prepared.eval, tmp_path, curated=str(tmp_path /
                       "curated.pbtxt"), serving=str(prepared.schema))
    assert result.schema_source.startswith("curated")
    assert {a.feature for a in result.anomalies} == {"contract"}


def test_unreadable_schema_file(prepared, tmp_path):
    (tmp_path / "bad.pbtxt").write_text("this is not a schema {")
    with pytest.raises(ConfigError, match="is not a TFDV schema in text format"):
        _validate(prepared.train, prepared.eval, tmp_path, curated=str(tmp_path / "bad.pbtxt"))
    with pytest.raises(ConfigError, match="does not exist"):
        _validate(prepared.train, prepared.eval, tmp_path, curated=str(tmp_path / "none.pbtxt"))
