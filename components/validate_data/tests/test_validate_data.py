"""validate_data logic with real TFDV: schema precedence, anomalies and their policy, drift and
skew as numbers, schema environments, and the views the KFP UI renders."""

import base64
import re

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from conftest import EXCLUDE, LABEL, validate_outputs
from ctloop import drift
from ctloop.components.ingest import logic as ingest
from ctloop.components.select_span import logic as select_span
from ctloop.components.validate_data import logic
from ctloop.data import datagen
from ctloop.errors import ConfigError


def _split(frame_or_dir, out):
    """Ingests a span folder (or writes a generated frame first) into train/eval Parquet."""
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(frame_or_dir, str):
        frame_or_dir.to_csv(out / "rows.csv", index=False)
        frame_or_dir = str(out / "rows.csv")
    selected = select_span.run(frame_or_dir)
    ingest.run(selected.files, selected.fingerprint, selected.spans, LABEL, EXCLUDE, 20,
               str(out / "train.parquet"), str(out / "eval.parquet"))
    return out / "train.parquet", out / "eval.parquet"


def _validate(train, evaluation, out, *, curated=None, serving=None, previous=None, **kwargs):
    return logic.run(str(train), str(evaluation), 3, LABEL, EXCLUDE, curated, serving, previous,
                     validate_outputs(out), **kwargs)


def _embedded_names(html: str) -> list[str]:
    embedded = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        base64.b64decode(re.search(r'proto-input="([^"]+)"', html).group(1)))
    return [d.name for d in embedded.datasets]


@pytest.fixture(scope="module")
def span1_stats(prepared):
    return (1, str(prepared.train.parent / "stats" / "train.stats.tfrecord"))


def test_cold_start_infers_schema_with_environments_and_writes_views(prepared):
    work = prepared.train.parent
    schema = tfdv.load_schema_text(str(prepared.schema))
    types = {f.name: f.type for f in schema.feature}
    # ingest writes every numeric feature as a float: no INT in one span, FLOAT in the next.
    assert types["plan"] == schema_pb2.BYTES and types["income"] == schema_pb2.FLOAT
    assert types["support_calls"] == schema_pb2.FLOAT
    assert {"age", "income", "plan", "region", LABEL} <= set(types)
    assert list(schema.default_environment) == ["TRAINING", "SERVING"]
    assert list(tfdv.get_feature(schema, LABEL).not_in_environment) == ["SERVING"]
    # Generalises to the next span: no presence, shape or domain learned from one span.
    assert not any(f.HasField("presence") or f.HasField("shape") or f.HasField("domain")
                   for f in schema.feature if f.name != LABEL)
    assert tfdv.get_feature(schema, LABEL).presence.min_fraction == 1.0
    assert not schema.string_domain
    # The stored schema carries no comparators: thresholds stay configuration.
    assert not tfdv.get_feature(schema, "income").drift_comparator.ByteSize()
    stats = tfdv.load_stats_binary(str(work / "stats" / "train.stats.tfrecord"))
    assert stats.datasets[0].num_examples > 2000
    # The train statistics carry each feature's reference bins for the next span's drift.
    profiles = drift.read_profiles(stats)
    assert profiles["plan"].kind == drift.CATEGORICAL and profiles["income"].kind == drift.NUMERIC
    assert sum(profiles["income"].counts) == stats.datasets[0].num_examples
    # The view is TFDV's Facets Overview with both datasets embedded as a base64 proto.
    assert _embedded_names((work / "stats.html").read_text()) == ["span 1 train", "span 1 eval"]
    report = (work / "anomalies.md").read_text()
    assert "No anomalies" in report and "no earlier span" in report
    assert "<td>skew</td>" in (work / "drift.html").read_text()


def test_excluded_columns_are_not_profiled_and_a_schema_requiring_them_does_not_block(
        prepared, tmp_path):
    work = prepared.train.parent
    stats = tfdv.load_stats_binary(str(work / "stats" / "train.stats.tfrecord"))
    profiled = {f.path.step[0] for f in stats.datasets[0].features}
    assert EXCLUDE and not profiled & set(EXCLUDE) and {"plan", LABEL} <= profiled
    assert not {f.name for f in tfdv.load_schema_text(str(prepared.schema)).feature} & \
        set(EXCLUDE)
    # A curated schema that requires the ID in every row: excluded, it is not validated.
    curated = tfdv.load_schema_text(str(prepared.schema))
    required = curated.feature.add(name=EXCLUDE[0], type=schema_pb2.BYTES)
    required.presence.min_fraction, required.presence.min_count = 1.0, 1
    tfdv.write_schema_text(curated, str(tmp_path / "curated.pbtxt"))
    result = _validate(prepared.train, prepared.eval, tmp_path,
                       curated=str(tmp_path / "curated.pbtxt"))
    assert result.valid and not result.anomalies
    # Not excluded, the same schema profiles the column and measures it: the eval split's IDs
    # are not the train split's, a skew that blocks.
    kept = logic.run(str(prepared.train), str(prepared.eval), 3, LABEL, [], str(tmp_path /
                     "curated.pbtxt"), None, None, validate_outputs(tmp_path / "kept"))
    assert [(a.feature, a.short) for a in kept.blocking] == [(EXCLUDE[0], "Skew")]
    kept_stats = tfdv.load_stats_binary(str(tmp_path / "kept" / "stats" / "train.stats.tfrecord"))
    assert EXCLUDE[0] in {f.path.step[0] for f in kept_stats.datasets[0].features}


def test_the_inferred_schema_passes_the_next_span_with_a_new_missing_value_and_rare_value(
        prepared, span1_stats, tmp_path):
    rows = datagen.generate_span(datagen.SpanSpec(2, rows=3000))
    rows.loc[0, "tenure_months"] = None  # complete in span 1
    rows.loc[1, "region"] = "antarctica"  # one row of 3000 in a region never seen
    result = _validate(*_split(rows, tmp_path / "data"), tmp_path / "out",
                       serving=str(prepared.schema), previous=span1_stats)
    assert result.valid, result.anomalies
    region = next(m for m in result.measurements
                  if m.feature == "region" and m.kind == drift.DRIFT)
    assert 0 < region.new_share < 0.001 and not region.too_new


def test_skew_is_measured_on_every_feature_but_excluded(prepared, tmp_path):
    result = _validate(prepared.train, prepared.eval, tmp_path)
    skew = {m.feature: m for m in result.measurements if m.kind == drift.SKEW}
    features = {f.name for f in tfdv.load_schema_text(str(prepared.schema)).feature}
    assert set(skew) == features - set(EXCLUDE)
    assert all(m.source == drift.CTLOOP and m.p_value is not None for m in skew.values())
    # The label is binned by class, a categorical by value, a number by its deciles.
    assert skew[LABEL].moved.startswith(("0:", "1:"))
    assert skew["plan"].feature_kind == drift.CATEGORICAL
    assert skew["income"].moved.startswith("(")
    # A hash split of one span: train and eval come from the same distribution.
    assert all(m.value < 0.03 and not m.breached for m in skew.values())
    assert not [m for m in result.measurements if m.kind == drift.DRIFT]


def test_drift_numbers_separate_drifted_from_stable_spans(prepared, span1_stats, tmp_path):
    stable = _split(str(prepared.data_dir / "span-2"), tmp_path / "stable")
    drifted = _split(datagen.generate_span(datagen.SpanSpec(2, rows=3000, drift=1.0)),
                     tmp_path / "drifted")
    calm = _validate(*stable, tmp_path / "calm", curated=str(prepared.schema),
                     previous=span1_stats)
    moved = _validate(*drifted, tmp_path / "moved", curated=str(prepared.schema),
                      previous=span1_stats)

    def values(result):
        return {m.feature: m.value for m in result.measurements if m.kind == drift.DRIFT}

    calm_values, moved_values = values(calm), values(moved)
    assert calm_values["income"] < 0.01 and calm_values["monthly_charges"] < 0.01
    assert moved_values["income"] > 0.03 and moved_values["monthly_charges"] > 0.03
    assert moved_values["plan"] > calm_values["plan"] + 0.03  # the plan mix moves to premium
    assert calm.valid and calm.previous_span == 1
    assert not moved.valid
    breached = {a.feature for a in moved.blocking if drift.DRIFT_TYPE in a.types}
    assert {"income", "monthly_charges"} <= breached
    report = (tmp_path / "moved" / "anomalies.md").read_text()
    assert "train split vs span 1's train split" in report and "**breached**" in report
    assert "significant (p-value" in report and "largest move" in report
    assert _embedded_names((tmp_path / "moved" / "stats.html").read_text()) == [
        "span 3 train", "span 1 train"]


def test_policy_warn_lets_drift_through_but_keeps_reporting_it(prepared, span1_stats, tmp_path):
    drifted = _split(datagen.generate_span(datagen.SpanSpec(2, rows=3000, drift=1.0)),
                     tmp_path / "drifted")
    policy = {drift.DRIFT_TYPE: "warn", drift.NEW_VALUES_TYPE: "warn"}
    result = _validate(*drifted, tmp_path / "out", curated=str(prepared.schema),
                       previous=span1_stats, policy=policy)
    assert result.anomalies and all(a.action == logic.WARN for a in result.anomalies)
    assert result.valid
    report = (tmp_path / "out" / "anomalies.md").read_text()
    assert "Only warnings: deployment is not blocked." in report


def test_corrupt_span_against_serving_schema_blocks(prepared, span1_stats, tmp_path):
    corrupt = _split(str(prepared.data_dir / "span-3"), tmp_path / "data")
    result = _validate(*corrupt, tmp_path, serving=str(prepared.schema), previous=span1_stats)
    assert not result.valid
    assert result.schema_source.startswith("serving model")
    # 5 % of rows: plan "PREMIUM+" (never seen), age -1 and charges 1e6 (beyond span 1's range).
    flagged = {(a.feature, a.types) for a in result.blocking}
    assert {("plan", (drift.NEW_VALUES_TYPE,)), ("age", (drift.NEW_VALUES_TYPE,)),
            ("monthly_charges", (drift.NEW_VALUES_TYPE,))} <= flagged
    report = (tmp_path / "anomalies.md").read_text()
    assert "deployment is blocked" in report and "categories never seen" in report


def test_a_curated_comparator_is_judged_by_tfdv_and_reported_as_such(prepared, span1_stats,
                                                                      tmp_path):
    curated = tfdv.load_schema_text(str(prepared.schema))
    tfdv.get_feature(curated, "income").drift_comparator.jensen_shannon_divergence.threshold = 0.5
    tfdv.write_schema_text(curated, str(tmp_path / "curated.pbtxt"))
    stable = _split(str(prepared.data_dir / "span-2"), tmp_path / "stable")
    result = _validate(*stable, tmp_path / "out", curated=str(tmp_path / "curated.pbtxt"),
                       previous=span1_stats)
    income = [m for m in result.measurements if m.feature == "income" and m.kind == drift.DRIFT]
    assert [(m.source, m.threshold) for m in income] == [(drift.TFDV, 0.5)]
    assert "| tfdv |" in (tmp_path / "out" / "anomalies.md").read_text()


def test_serving_data_without_label_validates_in_serving_environment(prepared, tmp_path):
    schema = tfdv.load_schema_text(str(prepared.schema))
    # The model's inputs: no label, and no excluded column (the schema leaves them out).
    rows = datagen.generate_span(datagen.SpanSpec(1, rows=500)).drop(columns=[LABEL, *EXCLUDE])
    # Numbers as ingest writes them (and the model reads them): floats.
    stats = tfdv.generate_statistics_from_dataframe(ingest.numbers_as_floats(rows, LABEL))
    assert not tfdv.validate_statistics(stats, schema, environment="SERVING").anomaly_info
    missing = tfdv.validate_statistics(stats, schema, environment="TRAINING").anomaly_info
    assert LABEL in missing


def test_curated_schema_wins_over_serving_schema(prepared, tmp_path):
    curated = tfdv.load_schema_text(str(prepared.schema))
    # Pin a domain the data violates: the curated schema must be the one applied (and TFDV
    # checks a curated domain as written).
    curated.string_domain.add(name="contract", value=["month-to-month"])
    tfdv.get_feature(curated, "contract").domain = "contract"
    tfdv.write_schema_text(curated, str(tmp_path / "curated.pbtxt"))
    result = _validate(prepared.train, prepared.eval, tmp_path,
                       curated=str(tmp_path / "curated.pbtxt"), serving=str(prepared.schema))
    assert result.schema_source.startswith("curated")
    assert {a.feature for a in result.anomalies} == {"contract"}


def test_sampling_computes_statistics_on_a_share_of_rows(prepared, tmp_path):
    full = tfdv.load_stats_binary(str(prepared.train.parent / "stats" / "train.stats.tfrecord"))
    logic.generate_statistics({"train": str(prepared.train)}, str(tmp_path), sample_rate=0.5)
    sampled = tfdv.load_stats_binary(str(tmp_path / "train.stats.tfrecord"))
    ratio = sampled.datasets[0].num_examples / full.datasets[0].num_examples
    assert 0.4 < ratio < 0.6
    logic.generate_statistics({"train": str(prepared.train)}, str(tmp_path / "again"),
                              sample_rate=0.5)
    again = tfdv.load_stats_binary(str(tmp_path / "again" / "train.stats.tfrecord"))
    assert again == sampled  # the same rows every run


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": {"NOT_A_TYPE": "warn"}}, "'NOT_A_TYPE' is not an anomaly type"),
        ({"policy": {"SCHEMA_NEW_COLUMN": "ignore"}}, "use 'block' or 'warn'"),
        ({"sample_rate": 1.5}, "sample_rate 1.5 is out of range"),
    ],
)
def test_bad_configuration_is_one_line_error(prepared, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _validate(prepared.train, prepared.eval, tmp_path, **kwargs)


def test_unreadable_schema_file(prepared, tmp_path):
    (tmp_path / "bad.pbtxt").write_text("this is not a schema {")
    with pytest.raises(ConfigError, match="is not a TFDV schema in text format"):
        _validate(prepared.train, prepared.eval, tmp_path, curated=str(tmp_path / "bad.pbtxt"))
    with pytest.raises(ConfigError, match="does not exist"):
        _validate(prepared.train, prepared.eval, tmp_path, curated=str(tmp_path / "none.pbtxt"))
