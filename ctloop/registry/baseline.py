"""The one baseline a run is judged against, read from the registry once (the resolve_baseline
and load_baseline components).

The baseline is the version a stage of the registry serves (``baseline_stage``: production by
default): its model, which train warm-starts from and evaluate compares against, and its
schema, which validate_data checks the data with; and the statistics drift is measured
against. Two steps, like select_span and ingest:

- ``resolve`` looks at the registry (the resolve_baseline task, never cached: the registry
  changes between runs) and fingerprints what it found: the version's files and record, the
  reference statistics' span and bytes.
- ``load`` copies exactly that into the run's artifacts (the load_baseline task, cached under
  the fingerprint, so the tasks fed those artifacts keep their KFP cache keys while the baseline
  stays the same), and fails if the registry changed since ``resolve`` looked.

Every later task takes the baseline from these artifacts and none reads the registry, so one run
cannot mix two baselines; rollout still checks, under the registry's lock, that the version it
replaces is the one resolved here (a concurrent push makes the baseline stale, and nothing is
pushed).

The drift reference is the stored train statistics of the latest span before this run's.
Rollout stores a span's statistics when it pushes a version trained on it, so the reference is
the latest earlier span whose data passed validation and made a pushed model: a span that was
blocked (corrupted data, a model not blessed) never becomes the reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from ctloop.errors import RegistryError
from ctloop.registry import PRODUCTION, check_stage, open_registry

SCHEMA_FILE = "schema.pbtxt"  # in the schema artifact's folder, as validate_data writes it
STATISTICS_FILE = "train.stats.tfrecord"  # in the statistics artifact's folder, likewise
# What the baseline model's metadata carries from the version's run record.
RECORD_KEYS = ("span", "spans", "data_fingerprint", "metrics", "baseline_version")


@dataclasses.dataclass(frozen=True)
class Baseline:
    """What the registry holds for a run: the serving version (None on a cold start), the
    drift reference (span, statistics file; None when no earlier span is stored) and their
    fingerprint."""

    registry: str
    version: Any  # ctloop.registry's Version, or None
    statistics: tuple[int, Path] | None
    fingerprint: str
    stage: str = PRODUCTION  # whose serving version it is

    @property
    def number(self) -> int | None:
        return self.version.number if self.version is not None else None

    @property
    def statistics_span(self) -> int | None:
        return self.statistics[0] if self.statistics is not None else None

    def describe(self) -> str:
        """One line: what the run is judged against."""
        which = "" if self.stage == PRODUCTION else f"{self.stage} "
        served = (f"{which}version {self.number}" if self.number is not None
                  else f"no {which}serving version (cold start)")
        reference = (f"span {self.statistics_span}'s statistics"
                     if self.statistics is not None else "no earlier span's statistics")
        return f"{served} of {self.registry}; drift against {reference}"


def resolve(registry_uri: str, model_name: str, span: int,
            s3_endpoint_url: str | None = None, baseline_stage: str = PRODUCTION) -> Baseline:
    """The version ``baseline_stage`` of the registry serves (production by default) and the
    stored statistics of the latest span before ``span`` (none for span 0, data without
    spans), fingerprinted.

    Raises:
        ConfigError: ``baseline_stage`` is not a stage.
    """
    check_stage(baseline_stage)
    registry = open_registry(registry_uri, model_name, s3_endpoint_url)
    version = registry.serving(baseline_stage)
    statistics = registry.previous_statistics(span) if span else None
    if statistics is not None:
        statistics = (int(statistics[0]), Path(statistics[1]))
    return Baseline(registry.uri, version, statistics, fingerprint(version, statistics),
                    baseline_stage)


def fingerprint(version: Any, statistics: tuple[int, Path] | None) -> str:
    """SHA-256 over the version's number and its run record, and over the reference statistics'
    span and bytes: the same baseline gives the same fingerprint in every run, and any change of
    what a task would read gives another. A complete version never changes (the registry's
    invariant) and its record names what made it (data fingerprint, code, parameters), so the
    record stands for its files: on an object store nothing else is downloaded to resolve. Its
    ``decisions`` (promotions, rollbacks) are left out: they say where the version went, not
    what it is, and a promotion must not make a run's cached baseline look changed."""
    digest = hashlib.sha256()
    if version is None:
        digest.update(b"no serving version\n")
    else:
        digest.update(f"version {version.number}\n".encode())
        record = {k: v for k, v in version.record().items() if k != "decisions"}
        digest.update(json.dumps(record, sort_keys=True).encode())
    if statistics is None:
        digest.update(b"no statistics\n")
    else:
        digest.update(f"statistics of span {statistics[0]}\n".encode())
        digest.update(hashlib.sha256(Path(statistics[1]).read_bytes()).digest())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class OutputPaths:
    """Where ``load`` writes: the SavedModel folder, the schema's and the statistics' folders."""

    model_dir: str
    schema_dir: str
    statistics_dir: str


def load(baseline: Baseline, expected_fingerprint: str, outputs: OutputPaths) -> dict[str, Any]:
    """Copies the baseline into ``outputs``; returns the model artifact's metadata.

    Raises:
        RegistryError: The registry no longer holds what ``resolve`` fingerprinted (a push, a
            rollback or new statistics in between); a rerun resolves again.
    """
    if expected_fingerprint and baseline.fingerprint != expected_fingerprint:
        raise RegistryError(
            f"the registry changed while this run started: resolve-baseline found another "
            f"baseline than the {baseline.describe()} there now; rerun to judge against it")
    for folder in (outputs.schema_dir, outputs.statistics_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {}
    if baseline.version is not None:
        shutil.copytree(baseline.version.model_dir, outputs.model_dir, dirs_exist_ok=True)
        shutil.copyfile(baseline.version.schema_path, Path(outputs.schema_dir) / SCHEMA_FILE)
        record = baseline.version.record()
    else:
        Path(outputs.model_dir).mkdir(parents=True, exist_ok=True)
    if baseline.statistics is not None:
        shutil.copyfile(baseline.statistics[1], Path(outputs.statistics_dir) / STATISTICS_FILE)
    return {"version": baseline.number, "registry": baseline.registry,
            "fingerprint": baseline.fingerprint, "statistics_span": baseline.statistics_span,
            "record": {k: record[k] for k in RECORD_KEYS if k in record}}
