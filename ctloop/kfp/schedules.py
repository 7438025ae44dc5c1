"""Recurring runs as code: a schedules file, cron checks, and the plan that makes KFP match it.

The file (``schedules.yaml``)::

    experiment: ctloop                 # where the recurring runs live (created if missing)
    pipeline: ctloop-continuous-training   # the schedules' pipeline unless one names its own
    config: ctloop.yaml                # optional: the runs' parameters, as `ctloop run -c` reads
    schedules:
      - name: nightly
        cron: "0 3 * * *"              # standard 5 fields, or: interval: 6h (s, m, h, d)
        pipeline_version: latest       # or a pinned version name
        pipeline: ctloop-monitor       # optional: another pipeline than the file's
        config: ctloop.yaml            # optional: this schedule's own settings file
        parameters: {data_uri: ..., label: churned, registry_uri: ...}  # over config's
        max_concurrency: 1             # default 1
        no_catchup: true               # default true: after a pause, run once, not once per miss
        enabled: true                  # default true

KFP has no update call for recurring runs, so a changed schedule is deleted and created again.
What a recurring run was created from is stored as a hash in its description
(``ctloop-schedule-sha256:<hex>``): the same hash means unchanged, and the tag marks the recurring
runs ctloop manages, the only ones ``--prune`` may delete. ``latest`` resolves to a version ID
when the plan is made, so applying after an upload moves ``latest`` schedules to the new version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ctloop.errors import ConfigError
from ctloop.monitor import CT_PIPELINE_NAME, MONITOR_PIPELINE_NAME

SCHEDULE_TAG = "ctloop-schedule-sha256:"
_SCHEDULE_TAG_RE = re.compile(re.escape(SCHEDULE_TAG) + r"([0-9a-f]{64})")
DEFAULT_EXPERIMENT = "ctloop"
ENABLED, DISABLED = "ENABLED", "DISABLED"

# (field, lowest, highest) of the standard 5-field cron, in order.
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("day of week", 0, 6))
_NAMES = {
    "month": {m: i for i, m in enumerate(
        "jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)},
    "day of week": {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
}
_INTERVAL_RE = re.compile(r"^([1-9][0-9]*)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_KEYS = {"name", "cron", "interval", "pipeline", "pipeline_version", "config", "parameters",
         "max_concurrency", "no_catchup", "enabled"}


def cron_to_kfp(expression: str) -> str:
    """Checks a standard 5-field cron expression and returns KFP's 6-field form (seconds first).

    Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or jan-dec), day of week
    (0-6 or sun-sat, 0 = Sunday); each ``*``, a value, a range ``a-b``, a step ``*/n`` or
    ``a-b/n``, or a comma-separated list of those.

    Raises:
        ConfigError: Naming the field and the value that is wrong.
    """
    fields = str(expression).split()
    if len(fields) != len(_CRON_FIELDS):
        hint = (" (KFP's own 6-field form starts with seconds: drop them here)"
                if len(fields) == 6 else "")
        raise ConfigError(
            f"cron {expression!r} has {len(fields)} fields, not 5{hint}; write "
            "'MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK', e.g. '0 3 * * *' for 03:00 daily")
    for text, (field, low, high) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            _check_cron_part(expression, field, low, high, part)
    return "0 " + " ".join(fields)


def cron_from_kfp(expression: str) -> str:
    """The 5-field form of a KFP cron expression whose seconds field is 0 (as ctloop writes)."""
    fields = expression.split()
    return " ".join(fields[1:]) if len(fields) == 6 and fields[0] == "0" else expression


def _check_cron_part(expression: str, field: str, low: int, high: int, part: str) -> None:
    def fail(problem: str) -> ConfigError:
        return ConfigError(
            f"cron {expression!r}: {field} {part!r} {problem}; use *, a value in {low}-{high}, "
            f"a range a-b, a step */n or a-b/n, or a list of those")

    base, slash, step = part.partition("/")
    if slash:
        if not step.isdigit():
            raise fail(f"has step {step!r}, not a whole number")
        if not 1 <= int(step) <= high - low + 1:
            raise fail(f"has step {step}, outside 1-{high - low + 1}")
        if base != "*" and "-" not in base:
            raise fail("steps from a single value; step over * or a range a-b")
    if base == "*":
        return
    start, dash, end = base.partition("-")
    first = _cron_value(start, field, low, high, fail)
    if dash:
        last = _cron_value(end, field, low, high, fail)
        if first > last:
            raise fail(f"is a range from {first} down to {last}")


def _cron_value(text: str, field: str, low: int, high: int, fail) -> int:
    value = _NAMES.get(field, {}).get(text.lower())
    if value is not None:
        return value
    if not text.isdigit():
        raise fail("is not a number" if text else "is empty")
    if not low <= int(text) <= high:
        raise fail(f"is outside {low}-{high}")
    return int(text)


def interval_seconds(value: Any) -> int:
    """Seconds of an interval written ``90s``, ``30m``, ``6h``, ``1d`` or as whole seconds.

    Raises:
        ConfigError: Anything else, zero or negative.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _INTERVAL_RE.match(str(value).strip())
    if not match:
        raise ConfigError(
            f"interval {value!r} is not a duration; write a positive number with a unit, e.g. "
            "90s, 30m, 6h or 1d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One declared recurring run."""

    name: str
    cron: str | None  # KFP's 6-field form
    interval_second: int | None
    pipeline_version: str  # a version name, or "latest"
    parameters: dict
    max_concurrency: int = 1
    no_catchup: bool = True
    enabled: bool = True
    pipeline: str = CT_PIPELINE_NAME  # the pipeline it runs (the file's unless it names one)


@dataclasses.dataclass(frozen=True)
class SchedulesFile:
    """A parsed schedules file."""

    experiment: str
    pipeline: str
    schedules: tuple[Schedule, ...]


def load(path: Path, default_pipeline: str) -> SchedulesFile:
    """Reads and checks a schedules file; every problem is one line naming file and field.

    Args:
        path: The YAML file.
        default_pipeline: The pipeline when the file names none.

    Raises:
        ConfigError: The file is missing, not YAML, or declares an invalid schedule.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"schedules file {path}: cannot read it ({exc.strerror}); "
                          "pass --file with an existing file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"schedules file {path} is not valid YAML "
                          f"({str(exc).splitlines()[0]}); fix its syntax") from exc
    return parse(data, str(path), default_pipeline, Path(path).parent)


def parse(data: Any, where: str, default_pipeline: str,
          base: Path | None = None) -> SchedulesFile:
    """Checks the content of a schedules file (see ``load``).

    A ``config:`` settings file (``ctloop.config``; at the top for every schedule, or in one
    schedule) gives the runs' parameters, as it gives ``ctloop run -c`` and ``ctloop submit -c``
    theirs; a schedule's ``parameters:`` override it. Its path is relative to ``base``, the
    schedules file's folder.
    """
    if not isinstance(data, dict) or not isinstance(data.get("schedules"), list):
        raise ConfigError(f"{where}: expected a mapping with a 'schedules' list; see the "
                          "example schedules.yaml in the ctloop repository")
    unknown = sorted(set(data) - {"experiment", "pipeline", "config", "schedules"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: experiment, "
                          "pipeline, config, schedules")
    shared = _settings(data.get("config"), where, base)
    pipeline = str(data.get("pipeline") or default_pipeline)
    schedules = tuple(_schedule(item, f"{where}: schedule #{i}", shared, base, pipeline)
                      for i, item in enumerate(data["schedules"], start=1))
    names = [s.name for s in schedules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: schedule name(s) {', '.join(duplicates)} declared twice; "
                          "names must be unique")
    return SchedulesFile(str(data.get("experiment") or DEFAULT_EXPERIMENT), pipeline, schedules)


def _settings(path: Any, where: str, base: Path | None) -> dict[str, Any]:
    """The parameters of a ``config:`` settings file ({} without one)."""
    if path is None:
        return {}
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: config {path!r} must be the path of a settings file")
    from ctloop import config

    return config.load(Path(base or ".") / path)


def _schedule(item: Any, where: str, shared: Mapping[str, Any] | None = None,
              base: Path | None = None, pipeline: str = CT_PIPELINE_NAME) -> Schedule:
    if not isinstance(item, dict):
        raise ConfigError(f"{where} is not a mapping; write name:, cron: or interval:, ...")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{where}: name {name!r} is invalid; use letters, digits, '.', '_', "
                          "'-' (up to 100)")
    where = f"{where.rsplit(':', 1)[0]}: schedule {name!r}"
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(sorted(_KEYS))}")
    if ("cron" in item) == ("interval" in item):
        raise ConfigError(f"{where}: give exactly one of cron: or interval:")
    try:
        cron = cron_to_kfp(item["cron"]) if "cron" in item else None
        interval = interval_seconds(item["interval"]) if "interval" in item else None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ConfigError(f"{where}: parameters must be a mapping of name: value")
    if "config" in item:
        shared = _settings(item["config"], where, base)
    parameters = {**(shared or {}), **parameters}
    pipeline = item.get("pipeline", pipeline)
    if not isinstance(pipeline, str) or not pipeline:
        raise ConfigError(f"{where}: pipeline {pipeline!r} must be the name of a pipeline on "
                          f"KFP, e.g. {CT_PIPELINE_NAME} or {MONITOR_PIPELINE_NAME}")
    _check_cluster_parameters(parameters, where, pipeline)
    version = item.get("pipeline_version", "latest")
    if not isinstance(version, str) or not version:
        raise ConfigError(f"{where}: pipeline_version {version!r} must be a version name or "
                          "'latest'")
    max_concurrency = item.get("max_concurrency", 1)
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or not (
            1 <= max_concurrency <= 10):
        raise ConfigError(f"{where}: max_concurrency {max_concurrency!r} must be a whole number "
                          "in 1-10 (KFP's limit)")
    flags = {key: item.get(key, True) for key in ("no_catchup", "enabled")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} {value!r} must be true or false")
    return Schedule(name, cron, interval, version, dict(parameters), max_concurrency,
                    flags["no_catchup"], flags["enabled"], pipeline)


_OBJECT_STORES = ("s3://", "gs://")


def _check_cluster_parameters(parameters: Mapping[str, Any], where: str,
                              pipeline: str = CT_PIPELINE_NAME) -> None:
    """A recurring run runs on a cluster, each task in its own pod: the registry (and the
    monitor's records) must be in an object store every pod reaches (a folder exists in one pod
    only, so no run would ever see another's model), and the CT pipeline's ``local`` target
    needs a serving environment to infra-validate in (without one nothing is ever
    infra-blessed, so nothing is ever pushed)."""
    if not parameters:  # nothing configured here: KFP names the required parameters missing
        return
    for key, example in (("registry_uri", "s3://mlpipeline/ctloop/registry"),
                         ("records_uri", "s3://mlpipeline/ctloop/records")):
        value = parameters.get(key)
        if value is not None and not str(value).startswith(_OBJECT_STORES):
            raise ConfigError(
                f"{where}: {key} {value!r} is a path inside one pod; use an object store "
                f"every task reaches, e.g. {example} with s3_endpoint_url")
    if pipeline == MONITOR_PIPELINE_NAME:  # it serves nothing: no serving target to check
        return
    target = parameters.get("serving_target", "local")
    if target == "local" and not parameters.get("serving_python"):
        raise ConfigError(
            f"{where}: serving_target 'local' without serving_python never infra-blesses a "
            "model, so nothing is pushed; on a cluster use serving_target: kserve")


def fingerprint(schedule: Schedule, version_id: str, parameters: Mapping[str, Any]) -> str:
    """The hash of everything a recurring run is created from, except whether it is enabled
    (that one is switched in place)."""
    content = {
        "cron": schedule.cron, "interval_second": schedule.interval_second,
        "version_id": version_id, "parameters": dict(parameters),
        "max_concurrency": schedule.max_concurrency, "no_catchup": schedule.no_catchup,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def tagged_fingerprint(description: str | None) -> str | None:
    """The fingerprint in a recurring run's description; None for runs ctloop did not create."""
    match = _SCHEDULE_TAG_RE.search(description or "")
    return match.group(1) if match else None


@dataclasses.dataclass(frozen=True)
class Create:
    """Create a recurring run for ``schedule`` on pipeline version ``version_id``."""

    schedule: Schedule
    pipeline_id: str
    version_id: str
    parameters: dict
    description: str


@dataclasses.dataclass(frozen=True)
class Delete:
    """Delete a recurring run (changed, duplicate, or no longer declared with ``--prune``)."""

    recurring_run_id: str
    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class SetEnabled:
    """Enable or disable a recurring run in place."""

    recurring_run_id: str
    name: str
    enabled: bool


@dataclasses.dataclass(frozen=True)
class Unchanged:
    """Nothing to do for this schedule."""

    recurring_run_id: str
    name: str


Action = Create | Delete | SetEnabled | Unchanged


@dataclasses.dataclass(frozen=True)
class Target:
    """What a schedule resolves to on the cluster: a version, and parameters of its types."""

    pipeline_id: str
    version_id: str
    parameters: dict


def plan(schedules: Sequence[Schedule], targets: Mapping[str, Target],
         existing: Sequence[Any], prune: bool) -> list[Action]:
    """Decides what makes the experiment's recurring runs match the declared schedules.

    Args:
        schedules: The declared schedules.
        targets: Schedule name -> its resolved ``Target``.
        existing: The ``V2beta1RecurringRun``s of the experiment.
        prune: Also delete recurring runs ctloop created that are no longer declared.

    Returns:
        Actions, deletions before creations for each schedule so that a changed one never
        runs twice.

    Raises:
        ConfigError: A declared name belongs to a recurring run that ctloop did not create.
    """
    by_name: dict[str, list[Any]] = {}
    for run in existing:
        by_name.setdefault(run.display_name, []).append(run)
    actions: list[Action] = []
    for schedule in schedules:
        target = targets[schedule.name]
        digest = fingerprint(schedule, target.version_id, target.parameters)
        runs = sorted(by_name.get(schedule.name, []), key=lambda r: r.recurring_run_id or "")
        foreign = [r for r in runs if tagged_fingerprint(r.description) is None]
        if foreign:
            raise ConfigError(
                f"schedule {schedule.name!r}: recurring run {foreign[0].recurring_run_id} has "
                "that name but was not created by ctloop; rename the schedule or delete that "
                "recurring run")
        keep = next((r for r in runs if tagged_fingerprint(r.description) == digest), None)
        for run in runs:
            if run is not keep:
                same = tagged_fingerprint(run.description) == digest
                actions.append(Delete(run.recurring_run_id, schedule.name,
                                      "duplicate" if same else "changed"))
        if keep is None:
            description = f"managed by ctloop schedule apply; {SCHEDULE_TAG}{digest}"
            actions.append(Create(schedule, target.pipeline_id, target.version_id,
                                  target.parameters, description))
        elif is_enabled(keep) != schedule.enabled:
            actions.append(SetEnabled(keep.recurring_run_id, schedule.name, schedule.enabled))
        else:
            actions.append(Unchanged(keep.recurring_run_id, schedule.name))
    if prune:
        declared = {s.name for s in schedules}
        actions += [Delete(run.recurring_run_id, run.display_name, "not declared")
                    for run in sorted(existing, key=lambda r: r.recurring_run_id or "")
                    if run.display_name not in declared
                    and tagged_fingerprint(run.description) is not None]
    return actions


def is_enabled(run: Any) -> bool:
    """Whether a ``V2beta1RecurringRun`` is enabled (KFP reports it as ``status``)."""
    return run.status == ENABLED


def describe_trigger(run: Any) -> str:
    """A recurring run's trigger as a person writes it: ``cron 0 3 * * *`` or ``every 3600 s``."""
    trigger = run.trigger
    if trigger is not None and trigger.cron_schedule is not None:
        return f"cron {cron_from_kfp(trigger.cron_schedule.cron or '')}"
    if trigger is not None and trigger.periodic_schedule is not None:
        return f"every {trigger.periodic_schedule.interval_second} s"
    return "no trigger"
