"""A ctloop model (see ``ctloop.contract``) behind KServe 0.21's ModelServer: what ``ctloop
serve`` runs.

One ``kserve.Model`` answers the V1 REST protocol (``{"instances": [{feature: value}, ...]}``),
the V2 Open Inference Protocol over REST and, when a port is given, over gRPC. Every request is
checked against the model's ``features.json`` before TensorFlow sees it, so a client mistake is an
HTTP 400 (gRPC INVALID_ARGUMENT) whose one-line message names the field and the fix. KServe's own
health routes (``/v2/health/ready``, ``/v1/models/<name>``) and Prometheus ``/metrics`` are kept.

The parts: ``ctloop.serving.decode`` checks requests, ``ctloop.serving.model`` serves one model
folder (``CtloopModel``), ``ctloop.serving.follow`` serves and follows a registry
(``RegistryModel``); their defaults are ``ctloop.serving.defaults``'. Only the serving
environment (kserve, TF) imports these modules.
"""

from __future__ import annotations

import logging
import time

from fastapi.exceptions import RequestValidationError

from ctloop.errors import RegistryError
from ctloop.registry import Registry, Version
from ctloop.serving import decode, follow
from ctloop.serving.defaults import DEFAULT_MAX_BATCH, DEFAULT_POLL_S, DEFAULT_PORT
from ctloop.serving.follow import RegistryModel
from ctloop.serving.kserve_api import kserve, logger, model_server
from ctloop.serving.model import CtloopModel, load_model
from ctloop.serving.recorder import Recorder

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_POLL_S", "DEFAULT_PORT", "CtloopModel", "RegistryModel",
           "load_model", "registry_version", "run_server"]

# What KServe logs for every request: uvicorn's access line, and its timing and latency lines.
_REQUEST_LOGGERS = ("uvicorn.access", "kserve.trace")

# KServe serves this module-level app.
model_server.app.add_exception_handler(RequestValidationError, decode.invalid_v2_request)


def registry_version(registry: Registry, number: int | None = None) -> Version:
    """A registry's version ``number``, or the one its serving pointer names (None).

    Raises:
        RegistryError: The registry has no serving version, or not the requested one.
    """
    if number is None:
        serving = registry.serving()
        if serving is None:
            raise RegistryError(
                f"registry {registry.uri} has no serving version of {registry.model_name!r}; "
                "run the pipeline first to train and push one, or check the registry path and "
                "model name")
        return serving
    found = next((v for v in registry.versions() if v.number == number), None)
    if found is None:
        raise RegistryError(
            f"version {number} of {registry.model_name!r} is not in {registry.uri}; choose one "
            f"of {[v.number for v in registry.versions()]}")
    return found


def run_server(model: CtloopModel, http_port: int = DEFAULT_PORT, grpc_port: int | None = None,
               request_log: bool = False, recorder: Recorder | None = None) -> None:
    """Loads the model and serves it with KServe's ModelServer until SIGTERM or SIGINT.

    One process serves: TF runs each batch on all cores already, and KServe 0.21's multi-worker
    mode kills workers that do not answer its 5 s liveness ping, which a worker importing TF cannot
    do reliably. Scale with replicas instead.

    Args:
        model: A CtloopModel (one model folder) or a RegistryModel (follows a registry).
        http_port: The REST port (V1, V2, health and ``/metrics``).
        grpc_port: The V2 gRPC port; None leaves gRPC off.
        request_log: Log every request: KServe's access, timing and latency lines (about
            0.2 ms a request here). Off, ``/metrics`` still counts requests and their latency.
        recorder: Record sampled requests with it (``ctloop.serving.recorder``); its counts of
            written and dropped records are on ``/metrics`` too.

    Raises:
        ModelError: The model cannot be loaded or breaks the contract.
        RegistryError: A registry has no serving version.
    """
    started = time.monotonic()
    model.load()
    model.recorder = recorder
    if recorder is not None:
        _export_counts(recorder)
    if isinstance(model, RegistryModel):
        follow.export_metrics(model)
    grpc = {"enable_grpc": False} if grpc_port is None else {"grpc_port": grpc_port}
    server = kserve.ModelServer(http_port=http_port, enable_latency_logging=request_log, **grpc)
    if not request_log:  # ModelServer has just configured these loggers
        for name in _REQUEST_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    # KServe's logger: ModelServer has just configured its handler and format.
    logger.info(
        "ctloop serving model %r from %s on HTTP port %d (gRPC %s, max batch %d); loaded in %.1f s",
        model.name,
        model.source,
        http_port,
        "off" if grpc_port is None else grpc_port,
        model.max_batch,
        time.monotonic() - started,
    )
    try:
        server.start([model])
    finally:
        if recorder is not None:
            recorder.close()  # what is queued reaches the files


def _export_counts(recorder: Recorder) -> None:
    """The recorder's counts as Prometheus counters on the server's ``/metrics``."""
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily

    class _Counts:
        def collect(self):
            yield CounterMetricFamily("ctloop_records_written", "Requests written to the "
                                      "record directory", value=recorder.written)
            yield CounterMetricFamily("ctloop_records_dropped", "Requests not recorded: the "
                                      "queue was full or a write failed", value=recorder.dropped)

    REGISTRY.register(_Counts())
