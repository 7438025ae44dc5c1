"""Hyperparameter search: the search space format, the Optuna study (trial 0 the configured
values, TPE seeded), the validation split carved out of the train split, and one trial (the
model of ``ctloop.training`` fitted with a trial's hyperparameters).

The tune task (``components/tune``) runs the search; its trials, in its worker processes or as a
cluster's tune_trial tasks, call ``Trials.run``; tune_plan proposes a cluster's trials.

A search space maps a hyperparameter to a range or a list of choices::

    learning_rate: {low: 0.0001, high: 0.01, log: true}   # a float range, sampled in log scale
    epochs: {low: 5, high: 30}                             # an int range (int bounds), step 1
    batch_size: {choices: [64, 128, 256]}
    hidden_units: {choices: [[64, 32], [128, 64], [32]]}  # layer sizes: choices only
    dropout: {low: 0.0, high: 0.5, step: 0.1}              # a user module's own: hp.user["dropout"]
    layers: {low: 1, high: 4, int: true}                   # a user module's own, whole numbers

The trainer's hyperparameters are ``TUNABLE`` (epochs, batch size and patience whole numbers);
any other name is the user module's own, which its ``build_model`` reads as
``hp.user.get(name, its default)``: a range of floats unless ``int: true``. The seed is not
tuned: a search over seeds fits noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any

from ctloop import contract
from ctloop.errors import ConfigError
from ctloop.settings import JUDGED, Hyperparameters

BEST_FILE = "hyperparameters.json"  # in the tune task's ``best`` artifact; train reads it
TRIALS_PAGE = "trials.html"  # beside it: the trials' plot and table, which the run's page shows
TUNABLE = ("epochs", "batch_size", "learning_rate", "hidden_units", "early_stopping_patience")
_INTS = ("epochs", "batch_size", "early_stopping_patience")
_KEYS = {"low", "high", "log", "step", "choices", "int"}
# The validation rows are drawn by a hash of each row's content under this key: ingest splits
# train/eval by the same content hash under pandas' default key, so its train rows all fall in
# its own upper buckets, and reusing that key would carve a skewed (or empty) validation split.
_VALIDATION_HASH_KEY = "ctloop-tune-0001"


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One hyperparameter's range (``low``..``high``, ``log``, ``step``) or ``choices``."""

    name: str
    kind: str  # "int", "float" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """The value an Optuna trial draws for this dimension (a list choice as a list)."""
        if self.kind == "choice":
            # Optuna's choices are scalars: a list (layer sizes) is drawn as its JSON text.
            drawn = trial.suggest_categorical(self.name, [_scalar(c) for c in self.choices])
            return json.loads(drawn) if isinstance(drawn, str) and drawn.startswith("[") else drawn
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def encode(self, value: Any) -> Any:
        """``value`` as Optuna stores it (for the configured values enqueued as trial 0)."""
        return _scalar(value) if self.kind == "choice" else value


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, tuple)) else value


def parse_space(space: dict[str, Any]) -> list[Dimension]:
    """The search space's dimensions, checked.

    Raises:
        ConfigError: One line naming the hyperparameter, what is wrong and the fix.
    """
    if not isinstance(space, dict) or not space:
        raise ConfigError("tune_space is empty: map at least one hyperparameter to a range, e.g. "
                          "{learning_rate: {low: 0.0001, high: 0.01, log: true}}")
    return [_dimension(str(name), spec) for name, spec in space.items()]


def _whole(name: str, value: Any) -> Any:
    """A trainer's whole-number value as an int: KFP hands JSON numbers over as floats."""
    if name == "hidden_units" and isinstance(value, list):
        return [_whole("epochs", v) for v in value]
    if name in _INTS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _dimension(name: str, spec: Any) -> Dimension:
    where = f"tune_space {name}"
    if isinstance(spec, dict) and (name in _INTS or name == "hidden_units"):
        spec = {k: [_whole(name, c) for c in v] if k == "choices" and isinstance(v, list)
                else _whole(name, v) for k, v in spec.items()}
    if name == "seed":
        raise ConfigError(f"{where}: the seed is not tuned (a search over seeds fits noise); "
                          "remove it and set seed")
    if not name.isidentifier():
        raise ConfigError(f"{where}: not a hyperparameter name; use one of {', '.join(TUNABLE)} "
                          "or a user module's hp.user key (a Python identifier)")
    if not isinstance(spec, dict) or not spec or set(spec) - _KEYS:
        raise ConfigError(f"{where}: {spec!r} is not a range or choices; write {{low: L, high: "
                          "H}} (optionally log: true, step: S) or {choices: [...]}")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list and alone, e.g. "
                              "{choices: [64, 128]}")
        for choice in choices:
            _check_value(name, choice, where)
        if len({_scalar(c) for c in choices}) != len(choices):
            raise ConfigError(f"{where}: choices {choices} repeat a value; list each once")
        return Dimension(name, "choice", choices=tuple(choices))
    if name == "hidden_units":
        raise ConfigError(f"{where}: layer sizes are lists: give choices, e.g. {{choices: "
                          "[[64, 32], [128, 64]]}")
    low, high = spec.get("low"), spec.get("high")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  for v in (low, high))
    if not numbers or not low < high:
        raise ConfigError(f"{where}: low {low!r} and high {high!r} must be numbers with low < "
                          "high")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool) or (log and low <= 0):
        raise ConfigError(f"{where}: log {log!r} needs true/false and, if true, low > 0")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))
                             or step <= 0 or log):
        raise ConfigError(f"{where}: step {step!r} must be a number > 0, and not with log")
    whole = spec.get("int", name in _INTS)
    if whole is not (name in _INTS) and name in TUNABLE:
        raise ConfigError(f"{where}: int: {whole!r} is for a user module's own keys only")
    if whole is not True and whole is not False:
        raise ConfigError(f"{where}: int: {whole!r} must be true or false")
    if whole and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise ConfigError(f"{where}: a whole-number range needs whole low, high and step, e.g. "
                          "low: 5")
    for value in (low, high):
        _check_value(name, value, where)
    return Dimension(name, "int" if whole else "float", low, high, log, step)


def _check_value(name: str, value: Any, where: str) -> None:
    """A trainer hyperparameter's value must be one Hyperparameters accepts."""
    if name not in TUNABLE:
        if not isinstance(value, (int, float, str, bool)):
            raise ConfigError(f"{where}: {value!r} is not a number, text or true/false")
        return
    if name == "hidden_units":
        if not (isinstance(value, list) and value and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise ConfigError(f"{where}: {value!r} is not a list of layer sizes, e.g. [64, 32]")
        value = tuple(value)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {value!r} is not a number")
    try:
        Hyperparameters(**{name: value})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def hyperparameters(base: Hyperparameters, params: dict[str, Any]) -> Hyperparameters:
    """``base`` with a trial's values: the trainer's replace its fields, the others go to
    ``hp.user``."""
    trainer = {k: (tuple(v) if k == "hidden_units" else v) for k, v in params.items()
               if k in TUNABLE}
    user = {k: v for k, v in params.items() if k not in TUNABLE}
    return dataclasses.replace(base, **trainer, user={**base.user, **user})


def tuned(base: Hyperparameters, best_dir: str) -> tuple[Hyperparameters, dict[str, Any]]:
    """``base`` with a search's chosen values (the tune task's ``best`` folder), and where they
    came from, for the run record."""
    from pathlib import Path

    found = json.loads((Path(best_dir) / BEST_FILE).read_text())
    chosen = found["hyperparameters"]
    hp = dataclasses.replace(
        base, epochs=int(chosen["epochs"]), batch_size=int(chosen["batch_size"]),
        learning_rate=float(chosen["learning_rate"]),
        hidden_units=tuple(int(units) for units in chosen["hidden_units"]),
        early_stopping_patience=int(chosen["early_stopping_patience"]), user=chosen["user"])
    source = ("the configured values (trial 0)" if found["configured"]
              else f"trial {found['trial']}")
    return hp, {"from": f"tune: {source} of {found['trials']}", "verdict": found["verdict"],
                "metric": found["metric"], "value": found["value"],
                "configured_value": found["configured_value"], "user": chosen["user"]}


def typed(dimensions: list[Dimension], params: dict[str, Any]) -> dict[str, Any]:
    """A trial's values with their dimensions' types again (KFP hands JSON numbers over as
    floats: a batch size of 64 arrives as 64.0)."""
    kinds = {d.name: d for d in dimensions}
    found = {}
    for name, value in params.items():
        if name == "hidden_units":
            value = [int(units) for units in value]
        elif kinds[name].kind == "int" or (
                kinds[name].kind == "choice" and isinstance(value, float) and value.is_integer()
                and any(isinstance(c, int) and c == value for c in kinds[name].choices)):
            value = int(value)
        found[name] = value
    return found


def configured(dimensions: list[Dimension], base: Hyperparameters) -> dict[str, Any]:
    """The configured values of the space's trainer hyperparameters: trial 0. A user module's
    own keys are left out: the module's own defaults apply in that trial."""
    return {d.name: list(getattr(base, d.name)) if d.name == "hidden_units"
            else getattr(base, d.name) for d in dimensions if d.name in TUNABLE}


def dimensions(space: dict[str, Any], user_module: str | None) -> list[Dimension]:
    """``parse_space``; a user module's own keys only with a user module."""
    dims = parse_space(space)
    own = [d.name for d in dims if d.name not in TUNABLE]
    if own and not user_module:
        raise ConfigError(f"tune_space {', '.join(own)}: not the trainer's hyperparameters "
                          f"({', '.join(TUNABLE)}) and no user_module reads them; set "
                          "user_module or remove them")
    return dims


def study(task: str, seed: int):
    """An in-memory Optuna study in the direction of the task's judged metric, TPE seeded."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # constant_liar: trials asked before the running ones are told are steered away from them.
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    direction = "maximize" if JUDGED[contract.task(task)].higher_is_better else "minimize"
    return optuna.create_study(direction=direction, sampler=sampler)


def ask(study, dims: list[Dimension]):
    """The next trial and its values; trial 0 (enqueued) leaves a user module's own keys to the
    module's defaults."""
    trial = study.ask()
    defaults = bool(trial.user_attrs.get("defaults"))
    params = {d.name: d.suggest(trial) for d in dims
              if not (defaults and d.name not in TUNABLE)}
    return trial, params, defaults


def enqueue_configured(study, dims: list[Dimension], base: Hyperparameters) -> None:
    """Trial 0: the configured values of the space's trainer hyperparameters."""
    values = configured(dims, base)
    study.enqueue_trial({d.name: d.encode(values[d.name]) for d in dims if d.name in values},
                        user_attrs={"defaults": True})


def plan(space: dict[str, Any], base: Hyperparameters, task: str, trials: int,
         user_module: str | None = None) -> list[dict[str, Any]]:
    """Every trial's values at once, for a fan-out of trial tasks (a cluster): trial 0 the
    configured ones, the others the seeded sampler's proposals without feedback (KFP has no loop
    whose next round depends on the last)."""
    dims = dimensions(space, user_module)
    searching = study(task, base.seed)
    enqueue_configured(searching, dims, base)
    planned = []
    for _ in range(trials):
        trial, params, defaults = ask(searching, dims)
        planned.append({"number": trial.number, "params": params, "defaults": defaults})
    return planned


def validation_split(frame, percent: int):
    """``(fit rows, validation rows)`` of the train split: ``percent`` of its rows by a stable
    hash of their content, never the eval split's rows.

    Raises:
        ConfigError: Either side would be empty.
    """
    import pandas as pd

    if not 1 <= percent <= 99:
        raise ConfigError(f"tune_validation_percent {percent} is out of range: use 1..99")
    buckets = pd.util.hash_pandas_object(
        frame, index=False, hash_key=_VALIDATION_HASH_KEY).to_numpy() % 100
    chosen = buckets < percent
    if chosen.all() or not chosen.any():
        raise ConfigError(f"tune_validation_percent {percent} leaves no rows on one side of "
                          f"the {len(frame)} train rows; use more rows or another percent")
    return frame[~chosen].reset_index(drop=True), frame[chosen].reset_index(drop=True)


class Trials:
    """The data every trial fits and measures, loaded once per process: the train split's fit
    and validation rows, the features, the task and the model builder."""

    def __init__(self, train_path: str, schema_path: str, label: str, exclude: list[str],
                 task: str, label_classes: list[str] | None, validation_percent: int,
                 user_module: str | None = None, s3_endpoint_url: str | None = None):
        import numpy as np
        import pandas as pd

        from ctloop import contract, training
        from ctloop.user_module import load_user_module

        frame = pd.read_parquet(train_path)
        fit_rows, validation = validation_split(frame, validation_percent)
        self.features = contract.features_from_schema(schema_path, label, exclude)
        self.spec = training.Task.of(task, label_classes,
                                     frame[label].to_numpy(dtype=np.float64))
        self.train = contract.to_inputs(fit_rows, self.features)
        self.validation = contract.to_inputs(validation, self.features)
        self.y_train = self.spec.labels(fit_rows, label)
        self.y_validation = self.spec.labels(validation, label)
        self.rows = {"fit": len(fit_rows), "validation": len(validation)}
        self.builder, self.user_module = training.build_model, user_module
        if user_module:
            self.builder = load_user_module(user_module, s3_endpoint_url)[0]
        self.metric = training.JUDGED_METRIC[self.spec.kind]

    def run(self, hp: Hyperparameters) -> dict[str, Any]:
        """Fits a fresh model with ``hp`` (seeded: the same hyperparameters give the same
        value) and returns its judged metric on the validation rows, epochs run and seconds."""
        import keras
        import tensorflow as tf

        from ctloop import training

        started = time.monotonic()
        keras.utils.set_random_seed(hp.seed)
        tf.config.experimental.enable_op_determinism()
        keras.backend.clear_session()
        model = training.make_model(self.builder, self.features, self.train, hp, self.spec,
                                    self.user_module)
        if self.builder is not training.build_model:
            training.check_user_model(model, self.validation, self.user_module, self.spec)
        history, metrics = training.fit(model, self.train, self.y_train, self.validation,
                                        self.y_validation, hp, self.spec, verbose=0)
        return {"value": metrics[self.metric], "epochs_run": len(history["loss"]),
                "seconds": round(time.monotonic() - started, 3)}
