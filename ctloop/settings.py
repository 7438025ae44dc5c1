"""Every tunable of a CT run, its default and its valid range, defined once.

The pipeline's signature takes its defaults from here (``pipelines/ct_pipeline.py``); an unset
flag of ``ctloop run`` or ``ctloop monitor`` means that default (their ``--help`` shows it, read
from here); the components take these tunables without defaults, the pipeline always passes
them. Each component builds these objects from its inputs, so a value that is out of range fails
the same way in ``ctloop run``'s preflight, in a settings file and inside a task.
"""

from __future__ import annotations

import dataclasses

from ctloop import contract
from ctloop.errors import ConfigError

# -- the model and its data ----------------------------------------------------------------------
MODEL_NAME = "ctloop-model"  # the model's name in the registry (and its InferenceService's)
SPANS = 1  # how many of the latest spans a run reads together
EVAL_PERCENT = 20  # the eval split's share of rows, in percent

# -- ingest --------------------------------------------------------------------------------------
# More classes than this is rarely a classification over tabular rows (IDs, free text); a numeric
# target belongs to regression.
MAX_CLASSES = 1000


# -- monitoring ----------------------------------------------------------------------------------
MONITOR_WINDOW = "2000"  # the served rows a monitor pass compares: the latest N, or a duration
MONITOR_MIN_ROWS = 200  # the fewest rows of a window judged; fewer give no decision
COOLDOWN_MINUTES = 60.0  # no triggered CT run within this many minutes of the last one

# -- data validation -----------------------------------------------------------------------------
BLOCK, WARN = "block", "warn"
# The anomaly types of the breaches ctloop.drift judges (TFDV's own types name TFDV's checks).
DRIFT_TYPE, SKEW_TYPE, NEW_VALUES_TYPE = "CTLOOP_DRIFT", "CTLOOP_SKEW", "CTLOOP_NEW_VALUES"
STATS_SAMPLE_RATE = 1.0  # the share of rows TFDV statistics are computed on, in (0, 1]


@dataclasses.dataclass(frozen=True)
class DriftThresholds:
    """When a measured change blocks (``ctloop.drift`` measures and judges; its ``Thresholds``).

    ``drift`` / ``skew``: the smallest Jensen-Shannon divergence (base 2, on the reference's
    bins) that counts, once significant. 0.03 is a shift of about 0.4 standard deviations of a
    whole normal distribution on decile bins (0.5 gives 0.04, 1 gives 0.15), 6 % of rows moving
    to a value not seen before, or a 50/50 category becoming 70/30. ``false_alarm_rate``: the
    chance that one validation of unchanged data reports any drift or skew, over all its
    features.
    """

    drift: float = 0.03
    skew: float = 0.03
    false_alarm_rate: float = 0.01

    def __post_init__(self):
        for name in ("drift", "skew"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:  # NaN fails too
                raise ConfigError(
                    f"{name} threshold {value} is out of range: a Jensen-Shannon divergence lies "
                    "in [0, 1], use a value in (0, 1]")
        if not 0.0 < self.false_alarm_rate < 1.0:
            raise ConfigError(
                f"false_alarm_rate {self.false_alarm_rate} is out of range: use a probability in "
                "(0, 1), e.g. 0.01")


def anomaly_types() -> list[str]:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    return [*anomalies_pb2.AnomalyInfo.Type.keys(), DRIFT_TYPE, SKEW_TYPE, NEW_VALUES_TYPE]


def check_policy(policy: dict[str, str]) -> dict[str, str]:
    """Returns ``policy`` if every key is a TFDV anomaly type and every value block/warn."""
    known = set(anomaly_types())
    for anomaly_type, action in policy.items():
        if anomaly_type not in known:
            close = sorted(k for k in known if anomaly_type.upper() in k or k in anomaly_type)
            raise ConfigError(
                f"anomaly policy key {anomaly_type!r} is not an anomaly type; use names like "
                f"{', '.join(close[:3]) or 'CTLOOP_DRIFT, CTLOOP_SKEW, SCHEMA_NEW_COLUMN'}"
            )
        if action not in (BLOCK, WARN):
            raise ConfigError(
                f"anomaly policy for {anomaly_type} is {action!r}; use 'block' or 'warn'"
            )
    return policy


# -- training ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 0.001
    hidden_units: tuple[int, ...] = (64, 32)
    seed: int = 42
    early_stopping_patience: int = 0  # epochs without a better eval loss before stopping; 0: off
    # A user module's own hyperparameters (tuned values by name; its build_model reads
    # hp.user.get(name, its default)). Empty unless a search tuned some.
    user: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)} is invalid: use at least 1")
        if not self.hidden_units or min(self.hidden_units) < 1:
            raise ConfigError(f"hidden_units {list(self.hidden_units)} is invalid: use one or "
                              "more layer sizes, each at least 1")
        if not 0 <= self.seed < 2**32:  # what Keras and NumPy accept as a seed
            raise ConfigError(f"seed {self.seed} is out of range: use 0 to {2**32 - 1}")
        if self.early_stopping_patience < 0:
            raise ConfigError(f"early_stopping_patience {self.early_stopping_patience} is "
                              "invalid: use 0 (off) or a number of epochs >= 1")
        if not 0.0 < self.learning_rate < 1.0:
            raise ConfigError(f"learning_rate {self.learning_rate} is out of range: use (0, 1)")


@dataclasses.dataclass(frozen=True)
class Tune:
    """The hyperparameter search before training (``components/tune``); off by default.

    ``trials``: how many (0: off; trial 0 is the configured hyperparameters). ``timeout_s``: no
    trial starts after this many seconds of search. ``parallelism``: trials at once (locally
    worker processes, at most the machine's cores; 0: one per core). ``validation_percent``: the
    share of the train split the trials are measured on (never the eval split).
    ``cluster_parallelism``: trial tasks at once in the compiled pipeline's fan-out, fixed at
    compile time (KFP's ParallelFor takes a constant; ``ctloop compile --tune-parallelism``).
    """

    trials: int = 0
    timeout_s: float = 3600.0
    parallelism: int = 0
    validation_percent: int = 20
    cluster_parallelism: int = 4

    def __post_init__(self):
        for name in ("trials", "parallelism"):
            if getattr(self, name) < 0:
                raise ConfigError(f"tune_{name} {getattr(self, name)} is invalid: use 0 or more")
        if not self.timeout_s > 0:  # NaN fails too
            raise ConfigError(f"tune_timeout_s {self.timeout_s} is invalid: use seconds > 0")
        if not 1 <= self.validation_percent <= 99:
            raise ConfigError(f"tune_validation_percent {self.validation_percent} is out of "
                              "range: use 1..99")


# -- evaluation ----------------------------------------------------------------------------------
# Regression with a serving model and no max_mae_increase: the label's units are unknown, so the
# default change bound is relative: the candidate's MAE may be at most 1% above the serving one's.
MAE_RELATIVE_INCREASE = 0.01
BLESS_ON_THRESHOLDS, REQUIRE_BASELINE = "bless_on_thresholds", "require_baseline"
COLD_START_POLICIES = (BLESS_ON_THRESHOLDS, REQUIRE_BASELINE)


@dataclasses.dataclass(frozen=True)
class Judged:
    """The metric a task's blessing judges, and which way is better."""

    class_name: str  # TFMA's metric class
    metric: str  # the name of its value
    shown: str  # as the report writes it
    higher_is_better: bool
    settings: tuple[str, str]  # the Thresholds fields of its value bound and change bound


JUDGED = {
    contract.BINARY: Judged("AUC", "auc", "AUC", True, ("min_auc", "max_auc_decrease")),
    contract.MULTICLASS: Judged("SparseCategoricalAccuracy", "sparse_categorical_accuracy",
                                "accuracy", True, ("min_accuracy", "max_accuracy_decrease")),
    contract.REGRESSION: Judged("MeanAbsoluteError", "mean_absolute_error", "MAE", False,
                                ("max_mae", "max_mae_increase")),
}


UNITS = ">= 0, in the label's units"
# A KFP float parameter cannot be None: the pipeline passes this for "no threshold".
NO_THRESHOLD = -1.0


def or_no_threshold(value: float | None) -> float:
    """A threshold's pipeline default: ``NO_THRESHOLD`` for None (off)."""
    return NO_THRESHOLD if value is None else value


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Blessing thresholds of each task's judged metric; a task uses its own pair.

    binary: ``min_auc``, ``max_auc_decrease``; multiclass: ``min_accuracy``,
    ``max_accuracy_decrease``; regression: ``max_mae``, ``max_mae_increase`` (in the label's
    units). A value bound of None leaves the judgement to the no-skill check (the candidate must
    beat guessing); a hand-set one replaces it. A change bound is how much worse than the serving
    model the candidate may be; None disables it, except regression's, where None means at most
    ``MAE_RELATIVE_INCREASE`` (1%) above the serving model's MAE.
    """

    min_auc: float | None = None
    max_auc_decrease: float | None = 0.01
    min_accuracy: float | None = None
    max_accuracy_decrease: float | None = 0.01
    max_mae: float | None = None
    max_mae_increase: float | None = None

    def __post_init__(self):
        changes = {judged.settings[1] for judged in JUDGED.values()}
        for name, value in dataclasses.asdict(self).items():
            in_label_units = name.startswith("max_mae")
            if value is None or (value >= 0 and (in_label_units or value <= 1)):  # NaN fails
                continue
            raise ConfigError(
                f"{name} {value} is out of range: use a value "
                f"{UNITS if in_label_units else 'in [0, 1]'}"
                + (" (0 = the candidate may not be worse than the serving model at all)"
                   if name in changes else ""))

    @classmethod
    def from_parameters(cls, **values: float | None) -> Thresholds:
        """Thresholds from pipeline parameters, where exactly ``NO_THRESHOLD`` means none.

        Raises:
            ConfigError: Any other negative value: on a cluster a typo such as -0.7 must not
                silently turn a gate off.
        """
        for name, value in values.items():
            if value is not None and value < 0 and value != NO_THRESHOLD:
                raise ConfigError(
                    f"{name} {value} is negative: only {NO_THRESHOLD} means no threshold; pass "
                    f"a value {UNITS if name.startswith('max_mae') else 'in [0, 1]'}, or "
                    f"{NO_THRESHOLD} to turn it off")
        return cls(**{name: None if value == NO_THRESHOLD else value
                      for name, value in values.items()})

    def of(self, task: str) -> tuple[float | None, float | None]:
        """The task's (value bound, change bound) as set."""
        value, change = JUDGED[task].settings
        return getattr(self, value), getattr(self, change)

    def change_of(self, task: str) -> tuple[float | None, bool]:
        """The change bound that applies against a serving model, and whether it is relative
        (regression's default when ``max_mae_increase`` is None)."""
        change = self.of(task)[1]
        if change is None and task == contract.REGRESSION:
            return MAE_RELATIVE_INCREASE, True
        return change, False


@dataclasses.dataclass(frozen=True)
class Policy:
    """What decides the blessing besides the thresholds.

    ``cold_start``: with no serving model, ``bless_on_thresholds`` blesses a candidate that passes
    its checks (the value threshold, or else the no-skill check), ``require_baseline`` blesses
    nothing. ``force_bless_reason``: when not
    empty, the candidate is blessed whatever the verdict, and the reason is recorded for audit.
    """

    cold_start: str = BLESS_ON_THRESHOLDS
    force_bless_reason: str | None = None

    def __post_init__(self):
        if self.cold_start not in COLD_START_POLICIES:
            raise ConfigError(
                f"cold_start {self.cold_start!r} is not a cold-start policy: use one of "
                f"{', '.join(map(repr, COLD_START_POLICIES))}"
            )
        if self.force_bless_reason and not self.force_bless_reason.strip():
            raise ConfigError(
                f"force_bless_reason {self.force_bless_reason!r} is blank: say why the model is "
                "blessed without passing its checks (it is recorded for audit), or leave it empty"
            )

    @property
    def force_reason(self) -> str | None:
        """The force-bless reason, or None when the blessing is not forced."""
        return self.force_bless_reason.strip() if self.force_bless_reason else None


# Fairness compares the groups of a column: more distinct values than this is a quantity or an
# ID (an age in years, a postcode), to be binned into a few groups before it is a sensitive column.
MAX_GROUPS = 20


@dataclasses.dataclass(frozen=True)
class Fairness:
    """Fairness criteria over sensitive columns, judged by evaluate; off by default.

    ``sensitive_features``: eval columns whose groups (one per value) are compared; excluded from
    training unless ``train_on_sensitive_features``. ``max_fpr_gap`` / ``max_tpr_gap``: binary
    models only: the largest difference between two groups' false / true positive rates at the
    0.5 decision threshold. ``max_fairness_gap_increase``: how much either gap may exceed the
    serving model's on the same rows. ``min_group_size``: a group is judged on a rate only with
    at least this many rows in its denominator (negatives for the FPR, positives for the TPR);
    smaller groups are reported with their confidence interval, not judged. None: no threshold.
    """

    sensitive_features: tuple[str, ...] = ()
    train_on_sensitive_features: bool = False
    max_fpr_gap: float | None = None
    max_tpr_gap: float | None = None
    max_fairness_gap_increase: float | None = None
    # At 30 rows a rate's standard error is at most 0.09: a point estimate worth comparing.
    min_group_size: int = 30

    THRESHOLDS = ("max_fpr_gap", "max_tpr_gap", "max_fairness_gap_increase")

    def __post_init__(self):
        for name in self.THRESHOLDS:
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:  # NaN fails too
                raise ConfigError(f"{name} {value} is out of range: a difference of two rates; "
                                  "use a value in [0, 1]")
        if self.min_group_size < 1:
            raise ConfigError(f"min_group_size {self.min_group_size} is invalid: use at least 1 "
                              f"(default {Fairness.min_group_size})")
        blank = [name for name in self.sensitive_features if not str(name).strip()]
        if blank:
            raise ConfigError(f"sensitive_features {list(self.sensitive_features)} holds a blank "
                              "name; name eval columns")
        if self.thresholds and not self.sensitive_features:
            raise ConfigError(f"fairness thresholds ({', '.join(self.thresholds)}) are set but "
                              "sensitive_features is empty: name the columns whose groups are "
                              "compared, or unset them")

    @property
    def thresholds(self) -> dict[str, float]:
        """The fairness thresholds set, by name."""
        return {name: getattr(self, name) for name in self.THRESHOLDS
                if getattr(self, name) is not None}

    @property
    def on(self) -> bool:
        """Whether any group is measured: off costs evaluate nothing."""
        return bool(self.sensitive_features)

    def check_task(self, task: str) -> None:
        """Refuses fairness thresholds for a task they do not judge (binary only)."""
        if self.thresholds and task != contract.BINARY:
            raise ConfigError(
                f"fairness thresholds ({', '.join(self.thresholds)}) judge binary models only "
                f"(rates at a decision threshold), not {task}; unset them: {task} groups are "
                "reported, not judged")

    @classmethod
    def from_parameters(cls, **values) -> Fairness:
        """From pipeline parameters, where exactly ``NO_THRESHOLD`` means none (any other
        negative value is refused, as for ``Thresholds``) and None lists are empty."""
        for name in cls.THRESHOLDS:
            value = values.get(name)
            if value is not None and value < 0 and value != NO_THRESHOLD:
                raise ConfigError(f"{name} {value} is negative: only {NO_THRESHOLD} means no "
                                  f"threshold; pass a value in [0, 1], or {NO_THRESHOLD} to turn "
                                  "it off")
            if value == NO_THRESHOLD:
                values[name] = None
        if "sensitive_features" in values:
            values["sensitive_features"] = tuple(values["sensitive_features"] or ())
        return cls(**values)


# -- infra validation ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SLO:
    """What the candidate's server must achieve."""

    max_p99_ms: float = 250.0
    min_rps: float = 20.0
    tolerance: float = 1e-4
    concurrency: int = 4
    requests: int = 200
    rows: int = 256
    # On a fresh cluster the candidate's first pod pulls the storage initializer's image and the
    # model before TensorFlow even imports: minutes on a laptop.
    startup_timeout_s: float = 600.0

    def __post_init__(self):
        for name in ("max_p99_ms", "tolerance", "startup_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} {getattr(self, name)} is invalid: use a value > 0")
        for name in ("concurrency", "requests", "rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)} is invalid: use at least 1")
        if self.min_rps < 0:
            raise ConfigError(f"min_rps {self.min_rps} is invalid: use a value >= 0")


# -- serving -------------------------------------------------------------------------------------
SERVING_TARGET = "local"  # contract.SERVING_TARGETS: "local" or "kserve"


@dataclasses.dataclass(frozen=True)
class KServe:
    """The ``kserve`` target: where the InferenceServices live and how long an apply may take to
    become ready."""

    namespace: str = "ctloop-serving"
    mode: str = "Standard"  # or "Knative"
    service_account: str = "ctloop-storage"  # holds the object store's credentials
    ready_timeout_s: float = 600.0
    # s3://BUCKET/PREFIX the predictor records served requests to, for the monitoring pipeline
    # (its records_uri); "": none.
    record_uri: str = ""


# -- rollout -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CanarySLO:
    """How the canary is run and judged."""

    percent: int = 20
    requests: int = 200
    min_canary_requests: int = 20
    max_error_rate: float = 0.0
    max_p99_ms: float = 250.0
    concurrency: int = 2
    deadline_s: float = 60.0

    def __post_init__(self):
        if not 1 <= self.percent <= 100:
            raise ConfigError(f"canary percent {self.percent} is out of range: use 1..100")
        if self.min_canary_requests < 1 or self.requests < self.min_canary_requests:
            raise ConfigError(
                f"canary requests {self.requests} / min {self.min_canary_requests} are invalid: "
                "use min >= 1 and requests >= min"
            )
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ConfigError(f"max_error_rate {self.max_error_rate} is out of range: use [0, 1]")


# How a stage's new version is released (canary, shadow, blue-green) and what it must show first:
# defined beside the release phases that use it (this module is at its size limit).
from ctloop.serving.release import Release as Release  # noqa: E402 - re-exported
