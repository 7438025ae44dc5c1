"""One monitor run: the latest window of served rows against the serving version's training data
(skew) and the previous window (drift), with data validation's calibrated measures."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop import contract, drift
from ctloop.errors import RegistryError
from ctloop.monitor.records import (
    ID,
    LABEL,
    LATENCY,
    PREDICTION,
    ROW,
    VERSION,
    Window,
    read_labels,
    read_records,
    windows,
)
from ctloop.registry import Registry, open_registry
from ctloop.serving import client
from ctloop.settings import MONITOR_MIN_ROWS


@dataclasses.dataclass(frozen=True)
class Result:
    """One monitor run: what was compared, what was measured, and the decision."""

    model_name: str
    version: int
    span: int
    window: str
    rows: int  # served rows of the serving version in the window
    previous_rows: int
    other_versions_rows: int  # rows of other versions (canaries, older) in the files read
    measurements: list[drift.Measurement]
    prediction_mean: float | None
    previous_prediction_mean: float | None
    latency_ms: dict[str, float]  # p50, p99 of the window's requests
    live_metric: tuple[str, float, int] | None  # (name, value, labeled rows)
    notes: list[str]

    @property
    def breached(self) -> list[drift.Measurement]:
        return [m for m in self.measurements if m.breached or m.too_new]

    @property
    def features(self) -> list[str]:
        """The features (and ``prediction``) whose change is judged drift or skew."""
        return sorted({m.feature for m in self.breached})

    @property
    def enough(self) -> bool:
        return not any(n.startswith("too few rows") for n in self.notes)

    @property
    def drifted(self) -> bool:
        return self.enough and bool(self.breached)

    def decision(self) -> dict[str, Any]:
        return {"drift": self.drifted, "features": self.features, "version": self.version,
                "span": self.span, "rows": self.rows, "enough_rows": self.enough}


def reference_profiles(registry: Registry, span: int) -> dict[str, drift.Profile]:
    """The training data's profiles of ``span``, from the statistics the registry stores.

    Raises:
        RegistryError: No statistics of that span are stored, or they carry no profiles.
    """
    from tensorflow_metadata.proto.v0 import statistics_pb2

    found = registry.previous_statistics(span + 1)
    if found is None or found[0] != span:
        raise RegistryError(
            f"registry {registry.uri} stores no statistics of span {span}, which the serving "
            "version was trained on; run the pipeline with this registry so data validation "
            "stores them")
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    stats.ParseFromString(Path(found[1]).read_bytes())
    profiles = drift.read_profiles(stats)
    if not profiles:
        raise RegistryError(
            f"statistics {found[1]} carry no reference bins (written before ctloop measured "
            "drift this way); retrain once so data validation stores them")
    return profiles


def as_served(reference: drift.Profile) -> drift.Profile:
    """A numeric training profile with its edges and extremes rounded to float32, as the model
    server casts numbers: a training value equal to an edge (0.1 filling several deciles) or to
    the maximum, served as float32, then falls in the same bin and not beyond the range, which
    at float64 it would not (0.1 as float32 is 0.10000000149)."""
    if reference.kind != drift.NUMERIC:
        return reference

    def f32(value: float | None) -> float | None:
        return None if value is None else float(np.float32(value))

    return dataclasses.replace(reference, edges=tuple(f32(e) for e in reference.edges),
                               low=f32(reference.low), high=f32(reference.high))


def monitor(records_dir: str | os.PathLike[str], registry_root: str | os.PathLike[str],
            model_name: str, window: Window, thresholds: drift.Thresholds | None = None,
            min_rows: int = MONITOR_MIN_ROWS, s3_endpoint_url: str | None = None) -> Result:
    """Measures the latest window of served rows of the serving version.

    Args:
        records_dir: The server's record directory, or ``s3://BUCKET/PREFIX``.
        registry_root: The registry the server serves from (a folder or ``s3://``).
        model_name: The registered model name.
        window: Which rows to compare.
        thresholds: The effect sizes that count and the false-alarm rate of the whole run
            (None: data validation's defaults).
        min_rows: The fewest rows of a window judged; fewer give no decision (no trigger).
        s3_endpoint_url: The S3-compatible endpoint of ``s3://`` records and registry.

    Raises:
        RegistryError: The registry has no serving version, it records no span, or the span's
            statistics are not stored.
        DataError: The record directory does not exist.
    """
    thresholds = thresholds or drift.Thresholds()
    registry = open_registry(str(registry_root), model_name, s3_endpoint_url)
    serving = registry.serving()
    if serving is None:
        raise RegistryError(f"registry {registry.uri} has no serving version of "
                            f"{model_name!r}; check the registry path and model name")
    span = serving.record().get("span")
    if span is None:
        raise RegistryError(f"version {serving.number} in {registry.uri} records no span; "
                            "monitor a version pushed by a ctloop run")
    span = int(span)
    features = contract.read_features(serving.model_dir)
    task, classes = contract.read_task(serving.model_dir)
    served = read_records(records_dir, window, str(serving.number), s3_endpoint_url)
    mine = served[served[VERSION].astype(str) == str(serving.number)]
    current, previous = windows(mine, window)
    notes = []
    if len(current) < min_rows:
        notes.append(f"too few rows: {len(current)} served by version {serving.number} in the "
                     f"window, {min_rows} needed for a decision")
    found = []
    if len(current):
        profiles = reference_profiles(registry, span)
        for name in features:
            values = current[name] if name in current else None
            if name in profiles:
                found.append(drift.measure(name, drift.SKEW, as_served(profiles[name]), values,
                                           len(current), thresholds.skew))
            else:
                notes.append(f"feature {name!r} has no reference bins in span {span}'s "
                             "statistics: its skew is not measured")
        if len(previous) >= min_rows:
            kinds = {n: drift.CATEGORICAL if d == contract.CATEGORICAL else drift.NUMERIC
                     for n, d in features.items()}
            kinds[PREDICTION] = drift.CATEGORICAL if task == contract.MULTICLASS else drift.NUMERIC
            for name, kind in kinds.items():
                reference = drift.profile(previous[name], kind)
                found.append(drift.measure(name, drift.DRIFT, reference, current[name],
                                           len(current), thresholds.drift))
        else:
            notes.append(f"previous window has {len(previous)} rows ({min_rows} needed): drift "
                         "between windows is not measured")
    means = [_prediction_mean(frame, task) for frame in (current, previous)]
    latency = current.drop_duplicates(ID)[LATENCY].astype(float).tolist()
    return Result(
        model_name, serving.number, span, str(window), len(current), len(previous),
        len(served) - len(mine), drift.judge(found, thresholds.false_alarm_rate), *means,
        latency_ms(latency),
        _live_metric(current, read_labels(records_dir, s3_endpoint_url), task, classes), notes)


def _prediction_mean(frame: pd.DataFrame, task: str) -> float | None:
    if not len(frame):
        return None
    column = "probability_max" if task == contract.MULTICLASS else PREDICTION
    return float(pd.to_numeric(frame[column]).mean())


def _live_metric(current: pd.DataFrame, labels: pd.DataFrame, task: str, classes: list[str]
                 ) -> tuple[str, float, int] | None:
    """The window's metric on the rows whose labels came back: AUC (binary, when both classes
    came back), accuracy (multiclass) or mean absolute error (regression)."""
    if not len(labels) or not len(current):
        return None
    joined = current.merge(labels.astype({ID: str}), on=[ID, ROW])
    joined = joined[joined[LABEL].notna()]
    if not len(joined):
        return None
    n = len(joined)
    if task == contract.REGRESSION:
        error = np.abs(pd.to_numeric(joined[LABEL]) - pd.to_numeric(joined[PREDICTION]))
        return "mae", float(error.mean()), n
    truth = joined[LABEL].astype(str)
    if task == contract.MULTICLASS:
        predicted = joined[PREDICTION].astype(int).map(dict(enumerate(classes)))
        return "accuracy", float((predicted == truth).mean()), n
    positive = truth == classes[1]
    if positive.all() or not positive.any():
        return None
    from scipy import stats

    # AUC = the Mann-Whitney U of the positives' scores over the negatives', normalized.
    ranks = stats.rankdata(pd.to_numeric(joined[PREDICTION]))
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    auc = (ranks[positive.to_numpy()].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return "auc", float(auc), n


def latency_ms(latencies: list[float]) -> dict[str, float]:
    """The served requests' p50 and p99 (``client.percentile``'s definition), or {} for none."""
    return {"p50": client.percentile(latencies, 50),
            "p99": client.percentile(latencies, 99)} if latencies else {}
