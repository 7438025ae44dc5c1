"""Drift and skew of the splits' features, measured and judged by ``ctloop.drift``."""

from __future__ import annotations

from ctloop import drift
from ctloop.data import splits


def measure(schema, train_path: str, eval_path: str, label: str, exclude: list[str],
            previous_stats, thresholds: drift.Thresholds
            ) -> tuple[list[drift.Measurement], dict[str, drift.Profile], str | None]:
    """Drift and skew of every feature the schema has (but ``exclude``), judged by ``drift``.

    Features whose curated schema carries its own comparator of a kind are left to TFDV for
    that kind. A class label (ingest encodes it as an integer) is binned by class. The splits
    are read a column at a time (``splits.column``). Returns the measurements (judged together,
    so their false-alarm rate is the validation's), the train split's profiles (the next span's
    drift reference), and a note when the previous span's statistics carry no profiles to
    compare with.
    """
    from tensorflow_data_validation.utils import schema_util
    from tensorflow_metadata.proto.v0 import schema_pb2

    features = {f.name: f for f in schema.feature if f.name not in set(exclude)}
    eval_rows, train_rows = splits.rows(eval_path), splits.rows(train_path)
    previous = drift.read_profiles(previous_stats) if previous_stats is not None else {}
    note = None
    if previous_stats is not None and not previous:
        note = ("The previous span's statistics carry no reference bins (written before ctloop "
                "measured drift this way): drift is measured from the next span on.")
    profiles, found = {}, []
    for name, feature in features.items():
        categorical = schema_util.is_categorical_feature(feature) or (
            name == label and feature.type == schema_pb2.INT)
        kind = drift.CATEGORICAL if categorical else drift.NUMERIC
        train = splits.column(train_path, name)
        if train is not None:
            profiles[name] = drift.profile(train, kind)
            if not feature.skew_comparator.ByteSize():
                found.append(drift.measure(name, drift.SKEW, profiles[name],
                                           splits.column(eval_path, name), eval_rows,
                                           thresholds.skew))
        if name in previous and not feature.drift_comparator.ByteSize():
            found.append(drift.measure(name, drift.DRIFT, previous[name], train, train_rows,
                                       thresholds.drift))
    return drift.judge(found, thresholds.false_alarm_rate), profiles, note
