"""Monitoring the served model: what it receives and answers, against what it was trained on.

``ctloop serve --record-dir`` writes sampled requests (``ctloop.serving.recorder``); this module
reads a window of them and measures, with the calibrated measures of data validation
(``ctloop.drift``: shared bins, a significance test at a family-wise false-alarm rate and an
effect-size floor):

- **skew**: each feature of the window against the training data of the serving version (the
  profiles stored in the TFDV statistics of the span that version was trained on);
- **drift**: each feature of the window against the window before it (both served by the
  serving version), and the prediction itself the same way;
- the prediction mean, the latency, and the live metric where labels came back (``feedback``).

All these tests share one false-alarm rate, so unchanged traffic reports drift in at most that
share of monitor runs. The decision is *drift* when a feature is breached (or carries values
outside the training data's, beyond chance); ``trigger`` then starts one CT run per drift
episode, after a cool-down.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctloop import contract, drift
from ctloop.errors import ConfigError, DataError, RegistryError
from ctloop.registry import Registry
from ctloop.serving import client
from ctloop.serving.recorder import LABELS_GLOB, RECORDS_GLOB

PREDICTION = "prediction"  # the prediction's name among the measured features
DEFAULT_MIN_ROWS = 200
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
ID, ROW, TIME, VERSION, LATENCY, LABEL = "id", "row", "time", "version", "latency_ms", "label"


@dataclasses.dataclass(frozen=True)
class Window:
    """Which served rows a monitor run compares: the latest ``rows`` rows, or the rows of the
    latest ``seconds`` (ending at the latest record); the previous window is as long, before."""

    rows: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"2000"`` (rows) or ``"30m"``, ``"6h"``, ``"1d"``, ``"90s"`` (a duration)."""
        text = text.strip()
        if text.isdigit() and int(text) > 0:
            return cls(rows=int(text))
        if match := _DURATION.match(text):
            seconds = float(match.group(1)) * _SECONDS[match.group(2)]
            if seconds > 0:
                return cls(seconds=seconds)
        raise ConfigError(f"window {text!r} is neither a row count nor a duration; pass e.g. "
                          "2000 (rows) or 30m, 6h, 1d")

    def __str__(self) -> str:
        return f"{self.rows} rows" if self.rows else f"{self.seconds:g} s"


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


def read_records(directory: str | os.PathLike[str], window: Window | None = None,
                 version: str | None = None) -> pd.DataFrame:
    """The served rows of a record directory, oldest first: id, row, time, version, latency,
    one column per feature, and the prediction (the class index of a multiclass answer's
    largest probability, and ``probability_max``).

    Args:
        directory: The record directory.
        window: Read only as far back as two such windows reach (of ``version``'s rows), not
            every file: a file last written before the oldest row needed holds none of them.
        version: The version whose rows ``window`` counts.

    A line cut short (a file being written) is skipped.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise DataError(f"record directory {folder} does not exist; pass the --record-dir the "
                        "server was started with")
    files = sorted(((p.stat().st_mtime, p) for p in folder.glob(RECORDS_GLOB)), reverse=True)
    parts = []
    for mtime, path in files:
        if window is not None and parts and mtime < _oldest_needed(parts, window, version):
            break  # its rows were all recorded before the oldest row the windows need
        part = _read_file(path)
        if len(part):
            parts.append(part)
    if not parts:
        return pd.DataFrame(columns=[ID, ROW, TIME, VERSION, LATENCY, PREDICTION])
    return pd.concat(parts, ignore_index=True).sort_values(TIME, kind="stable",
                                                           ignore_index=True)


def _oldest_needed(parts: list[pd.DataFrame], window: Window, version: str | None) -> float:
    """The time of the oldest row two windows need, of the rows read so far (-inf: more rows
    are needed than were read)."""
    times = pd.concat([p[TIME][p[VERSION].astype(str) == version] if version else p[TIME]
                       for p in parts]).to_numpy(dtype=float)
    if window.rows:
        if times.size < 2 * window.rows:
            return -math.inf
        return float(np.sort(times)[-2 * window.rows])
    if not times.size:
        return -math.inf
    return float(times.max() - 2 * window.seconds)


def _read_file(path: Path) -> pd.DataFrame:
    columns: dict[str, list] = {}
    rows = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line still being written
        outputs = record["outputs"]
        n = len(outputs)
        part = {ID: [record["id"]] * n, ROW: range(n), TIME: [record["time"]] * n,
                VERSION: [record["version"]] * n, LATENCY: [record["latency_ms"]] * n,
                **record["inputs"]}
        if n and isinstance(outputs[0], list):
            probabilities = np.asarray(outputs, dtype=float)
            part[PREDICTION] = probabilities.argmax(axis=1).astype(str).tolist()
            part["probability_max"] = probabilities.max(axis=1).tolist()
        else:
            part[PREDICTION] = outputs
        for name in part.keys() - columns.keys():  # a column first seen: earlier rows lack it
            columns[name] = [None] * rows
        for name, values in columns.items():
            values.extend(part.get(name, [None] * n))
        rows += n
    return pd.DataFrame(columns)


def read_labels(directory: str | os.PathLike[str]) -> pd.DataFrame:
    """The label feedback of a record directory: id, row, label (the latest per id and row)."""
    rows = []
    for path in sorted(Path(directory).glob(LABELS_GLOB)):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    frame = pd.DataFrame(rows, columns=[ID, ROW, LABEL])
    return frame.drop_duplicates([ID, ROW], keep="last")


def write_labels(directory: str | os.PathLike[str], labels: pd.DataFrame) -> Path:
    """Appends label feedback (columns ``request_id``, ``label``, optional ``row``, default 0)
    to the record directory, as one new ``labels-*.jsonl`` file.

    Raises:
        DataError: A column is missing.
    """
    missing = [c for c in ("request_id", LABEL) if c not in labels.columns]
    if missing:
        raise DataError(f"label feedback lacks column(s) {missing}; send request_id (the id a "
                        "recorded answer carries), label and optionally row (default 0)")
    rows = labels["row"] if "row" in labels.columns else pd.Series(0, index=labels.index)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    path = Path(directory) / f"labels-{stamp}-{os.getpid()}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({ID: str(i), ROW: int(r), LABEL: _plain_label(v)})
             for i, r, v in zip(labels["request_id"], rows, labels[LABEL], strict=True)]
    tmp = path.with_name(f".{path.name}")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)  # a reader sees all of the feedback or none
    return path


def _plain_label(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def windows(served: pd.DataFrame, window: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The current and previous windows of ``served`` (oldest first)."""
    if window.rows:
        n = window.rows
        return served.iloc[-n:], served.iloc[-2 * n:-n] if len(served) > n else served.iloc[:0]
    latest = served[TIME].max() if len(served) else 0.0
    current = served[served[TIME] > latest - window.seconds]
    previous = served[(served[TIME] > latest - 2 * window.seconds)
                      & (served[TIME] <= latest - window.seconds)]
    return current, previous


def reference_profiles(registry: Registry, span: int) -> dict[str, drift.Profile]:
    """The training data's profiles of ``span``, from the statistics the registry stores.

    Raises:
        RegistryError: No statistics of that span are stored, or they carry no profiles.
    """
    from tensorflow_metadata.proto.v0 import statistics_pb2

    found = registry.previous_statistics(span + 1)
    if found is None or found[0] != span:
        raise RegistryError(
            f"registry {registry.path} stores no statistics of span {span}, which the serving "
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
            min_rows: int = DEFAULT_MIN_ROWS) -> Result:
    """Measures the latest window of served rows of the serving version.

    Args:
        records_dir: The server's record directory.
        registry_root: The registry the server serves from.
        model_name: The registered model name.
        window: Which rows to compare.
        thresholds: The effect sizes that count and the false-alarm rate of the whole run
            (None: data validation's defaults).
        min_rows: The fewest rows of a window judged; fewer give no decision (no trigger).

    Raises:
        RegistryError: The registry has no serving version, it records no span, or the span's
            statistics are not stored.
        DataError: The record directory does not exist.
    """
    thresholds = thresholds or drift.Thresholds()
    registry = Registry(registry_root, model_name)
    serving = registry.serving()
    if serving is None:
        raise RegistryError(f"registry {registry.path} has no serving version of "
                            f"{model_name!r}; check the registry path and model name")
    span = serving.record().get("span")
    if span is None:
        raise RegistryError(f"version {serving.number} in {registry.path} records no span; "
                            "monitor a version pushed by a ctloop run")
    span = int(span)
    features = contract.read_features(serving.model_dir)
    task, classes = contract.read_task(serving.model_dir)
    served = read_records(records_dir, window, str(serving.number))
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
        _live_metric(current, read_labels(records_dir), task, classes), notes)


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


def markdown(result: Result) -> str:
    """The monitor report: decision, window, prediction, latency, live metric and the table of
    every measurement (drift.markdown's columns)."""
    verdict = (f"**drift** in {', '.join(f'`{f}`' for f in result.features)}" if result.drifted
               else "no decision (too few rows)" if not result.enough else "no drift")
    lines = [
        f"# Monitor: {result.model_name} version {result.version}", "",
        f"Decision: {verdict}.", "",
        f"- window: {result.window}: {result.rows} rows served by version {result.version} "
        f"(previous window {result.previous_rows}; {result.other_versions_rows} rows of other "
        "versions in the record files read are left out)",
        f"- skew: the window vs span {result.span}'s training data (the serving version's); "
        "drift: the window vs the previous window",
        f"- prediction mean: {_fmt(result.prediction_mean)} (previous window "
        f"{_fmt(result.previous_prediction_mean)})",
    ]
    if result.latency_ms:
        lines.append(f"- latency per request: p50 {result.latency_ms['p50']:.2f} ms, p99 "
                     f"{result.latency_ms['p99']:.2f} ms (server side)")
    if result.live_metric:
        name, value, n = result.live_metric
        lines.append(f"- live {name}: {value:.4f} on {n} labeled rows")
    else:
        lines.append("- live metric: no labels came back for the window")
    lines += [f"- note: {n}" for n in result.notes]
    table = drift.markdown(result.measurements, None).split("\n")
    # drift.markdown's header speaks of spans and splits; keep its explanation and table.
    start = next((i for i, line in enumerate(table) if line.startswith(drift.HOW[:20])), 0)
    return "\n".join(lines + ["", "## Measurements", "", *table[start:]])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def prometheus(result: Result) -> str:
    """The result in Prometheus' text format (node_exporter's textfile collector reads it)."""
    model = _label(result.model_name)
    out = []

    def metric(name: str, what: str, samples: list[tuple[str, float]]) -> None:
        out.extend([f"# HELP {name} {what}", f"# TYPE {name} gauge"])
        out.extend(f"{name}{{{labels}}} {value:.6g}" for labels, value in samples)

    base = f'model="{model}",version="{result.version}"'
    metric("ctloop_monitor_distance", "Jensen-Shannon divergence of a feature (kind: skew vs "
           "training data, drift vs the previous window)",
           [(f'{base},feature="{_label(m.feature)}",kind="{m.kind}"', m.value)
            for m in result.measurements])
    metric("ctloop_monitor_breached", "1 when a feature's change is judged drift or skew",
           [(f'{base},feature="{_label(m.feature)}",kind="{m.kind}"',
             float(m.breached or m.too_new)) for m in result.measurements])
    metric("ctloop_monitor_drift", "1 when the monitor decided drift", [(base, result.drifted)])
    metric("ctloop_monitor_window_rows", "Rows in the window", [(base, result.rows)])
    if result.prediction_mean is not None:
        metric("ctloop_monitor_prediction_mean", "Mean prediction in the window",
               [(base, result.prediction_mean)])
    for quantile, value in result.latency_ms.items():
        metric(f"ctloop_monitor_latency_{quantile}_ms", f"Server-side request latency, {quantile}",
               [(base, value)])
    if result.live_metric:
        name, value, n = result.live_metric
        metric("ctloop_monitor_live_metric", "The task's metric on labeled rows of the window",
               [(f'{base},metric="{name}"', value)])
        metric("ctloop_monitor_labeled_rows", "Labeled rows in the window", [(base, n)])
    metric("ctloop_monitor_timestamp_seconds", "When the monitor ran", [(base, time.time())])
    return "\n".join(out) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Writes a file by rename, so a reader (the textfile collector) never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- the trigger --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Trigger:
    """What the trigger did: ``started`` a run (its command and exit code), or why not."""

    started: bool
    reason: str
    command: list[str] = dataclasses.field(default_factory=list)
    exit_code: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def trigger(result: Result, state_path: str | os.PathLike[str], command: list[str],
            cooldown_s: float, now: float | None = None) -> Trigger:
    """Starts ``command`` (a CT run) when ``result`` decides drift, once per drift episode.

    An episode starts with a drift decision and ends with a no-drift decision on enough rows,
    or when the serving version changes (a new model serves: a new reference). One episode
    starts at most one run, and no run starts within ``cooldown_s`` of the last one, so a
    monitor on a schedule cannot start a run per pass. The state file is written before the
    run starts: a monitor killed during the run does not start another for the same episode.

    Notifications: none is sent; ``notify`` below is where a sink would be called.
    """
    now = time.time() if now is None else now
    path = Path(state_path)
    state = json.loads(path.read_text()) if path.exists() else {}
    episode = state.get("episode")
    if episode and episode.get("version") != result.version:
        episode = None  # a new serving version: its own reference, its own episodes
    if not result.drifted:
        if result.enough:
            episode = None
        state["episode"] = episode
        write_atomic(path, json.dumps(state, indent=2))
        return Trigger(False, "no drift" if result.enough else "no decision: too few rows")
    if episode:
        return Trigger(False, f"drift episode of version {result.version} since "
                       f"{_when(episode['started'])} already started a run")
    last = state.get("last_run")
    if last and now - last["time"] < cooldown_s:
        return Trigger(False, f"cool-down: the last run started {now - last['time']:.0f} s ago "
                       f"(< {cooldown_s:g} s)")
    state["episode"] = {"started": now, "version": result.version, "features": result.features}
    state["last_run"] = {"time": now, "command": command, "exit_code": None}
    write_atomic(path, json.dumps(state, indent=2))
    notify(result, command)
    code = subprocess.call(command)
    state["last_run"]["exit_code"] = code
    write_atomic(path, json.dumps(state, indent=2))
    return Trigger(True, f"drift in {', '.join(result.features)}: started a CT run", command,
                   code)


def notify(result: Result, command: list[str]) -> None:
    """The extension point for notifications of a triggered run (chat, e-mail, an alert
    manager): ctloop has no notification sink yet, so nothing is sent. The Prometheus metrics
    (``ctloop_monitor_drift``) are what an alerting rule reads meanwhile."""


def ctloop_command(command: str, args: list[str]) -> list[str]:
    """``ctloop <command> <args>`` with this interpreter: ``run`` (a local CT run with the
    user's flags) or ``submit`` (a KFP run on a cluster, through the same upload/submit code)."""
    if command not in ("run", "submit"):
        raise ConfigError(f"trigger {command!r} is not a ctloop command that starts a CT run; "
                          "use run (local) or submit (a KFP cluster)")
    return [sys.executable, "-m", "ctloop.cli", command, *args]


def _when(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def latency_ms(latencies: list[float]) -> dict[str, float]:
    """The served requests' p50 and p99 (``client.percentile``'s definition), or {} for none."""
    return {"p50": client.percentile(latencies, 50),
            "p99": client.percentile(latencies, 99)} if latencies else {}
