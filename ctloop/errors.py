"""Domain errors. Each message is one line: the input, what was wrong, and the fix."""


class CtloopError(Exception):
    """Base class of every error ctloop raises on purpose."""


class DataError(CtloopError):
    """Input data is missing, unreadable or unusable (a user fix: the data or its path)."""


class DataChangedError(DataError):
    """The data files changed between select_span's listing and ingest's read (a rerun fixes it)."""


class ConfigError(CtloopError):
    """A parameter or configuration value is invalid (a user fix: the flag or parameter)."""


class RegistryError(CtloopError):
    """The model registry is missing, inconsistent or locked by another run."""


class StaleBaselineError(RegistryError):
    """The serving version changed between a model's evaluation and its push."""


class ModelError(CtloopError):
    """A model cannot be loaded or does not have the expected serving signature."""


class TaskFailedError(CtloopError):
    """A pipeline task failed on a local run; the message is the task's own reason."""


class WorkdirBusyError(CtloopError):
    """Another local run is using the workdir (a fix: wait for it, or use another workdir)."""


class KfpError(CtloopError):
    """A Kubeflow Pipelines API is unreachable or refused a request (the message says which)."""


class ClusterError(CtloopError):
    """The Kubernetes cluster is unreachable or refused a request, or an InferenceService did not
    become ready (a fix on the cluster: KServe, RBAC, storage credentials, the model)."""


class PromotionRefused(RegistryError):
    """A promotion or rollback between stages was refused (no approver or reason, a version not
    staged, not blessed or superseded, no history to return to); nothing was changed."""
