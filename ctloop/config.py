"""The settings file of a CT run (``ctloop.yaml``): pipeline parameters, checked before anything
runs.

Its keys are the parameters of the pipeline (the signature of ``ct_pipeline``), so one file feeds
``ctloop run -c``, ``ctloop submit -c`` and a schedule's ``config:``: a setting is written once.
Every value is checked against the parameter's type and against the range checks the tasks
themselves make (train's ``Hyperparameters``, evaluate's ``Thresholds``, infra validation's
``SLO``, ...), so a typo fails in a second with one line instead of minutes later in a task.

``ctloop.starter`` writes a commented one for a CSV (``ctloop config init``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ctloop import tuning
from ctloop.errors import ConfigError
from ctloop.settings import (
    EVAL_PERCENT,
    NO_THRESHOLD,
    SLO,
    Hyperparameters,
    Thresholds,
)

# Threshold parameters whose exact -1.0 means "none" (evaluate's NO_THRESHOLD); YAML's null
# says the same.
THRESHOLDS = ("min_auc", "max_auc_decrease", "min_accuracy", "max_accuracy_decrease", "max_mae",
              "max_mae_increase", "max_fpr_gap", "max_tpr_gap", "max_fairness_gap_increase")
# Fairness settings, checked together (thresholds need sensitive features and a binary task).
FAIRNESS = ("sensitive_features", "train_on_sensitive_features", "max_fpr_gap", "max_tpr_gap",
            "max_fairness_gap_increase", "min_group_size")


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One pipeline parameter: its Python type (``str``, ``int``, ``float``, ``bool``, ``list``,
    ``dict``), the type of a list's items, and its default (``REQUIRED`` when it has none)."""

    name: str
    kind: type
    item: type | None
    default: Any


REQUIRED = inspect.Parameter.empty


@functools.cache
def parameters() -> dict[str, Parameter]:
    """The pipeline's parameters, from ``ct_pipeline``'s signature, in signature order."""
    from ctloop.pipelines.ct_pipeline import ct_pipeline

    found = {}
    for param in inspect.signature(ct_pipeline.pipeline_func).parameters.values():
        annotation = param.annotation
        origin = typing.get_origin(annotation)
        kind = origin or annotation
        item = typing.get_args(annotation)[0] if origin is list else None
        found[param.name] = Parameter(param.name, kind, item, param.default)
    return found


def load(path: str | Path) -> dict[str, Any]:
    """Reads and checks a settings file (see ``check``).

    Raises:
        ConfigError: The file is missing, not YAML, not a mapping, or a value is wrong.
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror}); write one with "
                          "`ctloop config init --data CSV`") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]}); "
                          "fix its syntax") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of pipeline parameter: value, "
                          f"not a {type(data).__name__}")
    return check(data, f"config file {path}")


def check(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Checks settings against the pipeline's parameters: names, types, then ranges.

    Args:
        values: Parameter name -> value, as YAML reads them.
        source: Where they come from, for messages.

    Returns:
        The values in the pipeline's types (integers given for floats become floats; a null
        threshold becomes -1.0, the pipeline's "none").

    Raises:
        ConfigError: One line naming the key, the value and what is allowed.
    """
    known = parameters()
    checked = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else "see `ctloop run --help`"
            raise ConfigError(f"{source}: {key!r} is not a pipeline parameter; {hint}")
        checked[key] = _typed(known[key], value, source)
    for key, value in checked.items():
        rule = _RANGES.get(key)
        if rule is None:
            continue
        try:
            rule(value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {key}: {value!r} is not allowed: {exc}") from exc
    if any(key in checked for key in FAIRNESS):
        from ctloop.settings import Fairness

        given = {key: checked.get(key, known[key].default) for key in FAIRNESS}
        try:
            Fairness.from_parameters(**given).check_task(checked.get("task", known["task"].default))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    strategy = checked.get("release_strategy", known["release_strategy"].default)
    if strategy != "canary" and checked.get("serving_target") == "kserve":
        raise ConfigError(f"{source}: release_strategy {strategy!r} runs on the local target "
                          "only (on KServe its manifests are generated, not applied); use "
                          "release_strategy: canary with serving_target: kserve")
    if checked.get("tune_trials") and not checked.get("tune_space"):
        raise ConfigError(f"{source}: tune_trials {checked['tune_trials']} needs tune_space: map "
                          "hyperparameters to ranges, e.g. {learning_rate: {low: 0.0001, high: "
                          "0.01, log: true}}")
    return checked


_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false",
          list: "a list", dict: "a mapping"}


def _typed(param: Parameter, value: Any, source: str) -> Any:
    kind, key = param.kind, param.name
    if value is None and key in THRESHOLDS:
        return NO_THRESHOLD
    wanted = _NAMES[kind] + (f" of {_NAMES[param.item]}" if param.item else "")
    if kind is dict and key == "tune_space":
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, dict) for k, v in value.items())
        wanted = "a mapping of hyperparameter: {low, high} or {choices}"
    elif kind is dict:
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        wanted = "a mapping of text: text"
    elif kind is list:
        item = param.item or str
        ok = isinstance(value, list) and all(_is(v, item) for v in value)
    else:
        ok = _is(value, kind)
    if not ok:
        hint = ""
        if kind is str and isinstance(value, (int, float, bool)):
            hint = " (quote it to make it text)"
        elif kind is list and not isinstance(value, (list, dict)):
            hint = f" (write [{value}])"
        raise ConfigError(f"{source}: {key}: {value!r} is not allowed: {key} is {wanted}{hint}")
    if kind is float:
        return float(value)
    return list(value) if kind is list else value


def _is(value: Any, kind: type) -> bool:
    # bool is an int in Python, but never a valid number here; a float must be finite.
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def _hyperparameter(name: str) -> Callable[[Any], None]:
    def rule(value):

        Hyperparameters(**{name: tuple(value) if name == "hidden_units" else value})
    return rule


def _drift(name: str) -> Callable[[Any], None]:
    def rule(value):
        from ctloop import drift

        drift.Thresholds(**{name: value})
    return rule


def _threshold(name: str) -> Callable[[Any], None]:
    def rule(value):

        Thresholds.from_parameters(**{name: value})
    return rule


def _slo(name: str) -> Callable[[Any], None]:
    def rule(value):

        SLO(**{name: value})
    return rule


def _between(name: str, low: float, high: float, shown: str) -> Callable[[Any], None]:
    def rule(value):
        if not low <= value <= high:
            raise ConfigError(f"{name} {value} is out of range: use {shown}")
    return rule


def _model_name(value):
    from ctloop.registry import validate_model_name

    validate_model_name(value)


def _task(value):
    from ctloop import contract

    contract.task(value)


def _serving_target(value):
    from ctloop import contract

    contract.serving_target(value)


def _policy(value):
    from ctloop.settings import check_policy

    check_policy(value)


def _cold_start(value):
    from ctloop.settings import Policy

    Policy(cold_start=value)


def _force_bless(value):
    from ctloop.settings import Policy

    Policy(force_bless_reason=value or None)


def _canary(value):
    from ctloop.settings import CanarySLO

    CanarySLO(percent=value)


def _sample_rate(value):
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"stats_sample_rate {value} is out of range: use a value in (0, 1]")


def _kserve_mode(value):
    if value not in ("Standard", "Knative"):
        raise ConfigError(f"kserve_mode {value!r} is not supported: use 'Standard' or 'Knative'")


def _record_uri(value):
    from ctloop.kserve import recording

    recording.check_uri(value)


def _stage(value):
    from ctloop.registry.base import check_stage

    check_stage(value)


def _strategy(value):
    from ctloop.settings import Release

    Release(strategy=value)


def _notify_on(value):
    from ctloop import notify

    unknown = sorted(set(value) - set(notify.OUTCOMES))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)} is not an outcome: use some of "
                          f"{', '.join(notify.OUTCOMES)}")


def _gpu_count(value):
    if not value.isdigit():
        raise ConfigError(f"gpu_count {value!r} is not a whole number of GPUs written as text, "
                          "e.g. '1'")


# Parameter -> the range check the tasks make on it (each raises ConfigError saying what is
# allowed). Types are checked before, against the signature.
_RANGES: dict[str, Callable[[Any], None]] = {
    "model_name": _model_name,
    "task": _task,
    "eval_percent": _between("eval_percent", 1, 99, f"1..99 (default {EVAL_PERCENT})"),
    "spans": _between("spans", 1, math.inf, "at least 1"),
    "drift_threshold": _drift("drift"),
    "skew_threshold": _drift("skew"),
    "false_alarm_rate": _drift("false_alarm_rate"),
    "anomaly_policy": _policy,
    "stats_sample_rate": _sample_rate,
    **{name: _hyperparameter(name) for name in (
        "epochs", "batch_size", "learning_rate", "hidden_units", "early_stopping_patience",
        "seed")},
    **{name: _threshold(name) for name in THRESHOLDS if name not in FAIRNESS},
    "cold_start": _cold_start,
    "force_bless_reason": _force_bless,
    "max_p99_ms": _slo("max_p99_ms"),
    "min_rps": _slo("min_rps"),
    "infra_startup_timeout_s": _slo("startup_timeout_s"),
    "serving_target": _serving_target,
    "canary_percent": _canary,
    "release_stage": _stage,
    "baseline_stage": _stage,
    "release_strategy": _strategy,
    "shadow_min_agreement": _between("shadow_min_agreement", 0.0, 1.0, "a share in [0, 1]"),
    "notify_on": _notify_on,
    "kserve_mode": _kserve_mode,
    "serving_record_uri": _record_uri,
    "gpu_count": _gpu_count,
    "tune_trials": _between("tune_trials", 0, math.inf, "0 (off) or more"),
    "tune_timeout_s": _between("tune_timeout_s", 1e-3, math.inf, "seconds > 0"),
    "tune_parallelism": _between("tune_parallelism", 0, math.inf, "0 (one per core) or more"),
    "tune_validation_percent": _between("tune_validation_percent", 1, 99, "1..99"),
    "tune_space": lambda value: value and tuning.parse_space(value),  # empty: no search
}
