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
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ctloop.errors import RegistryError
from ctloop.registry import Registry, Version
from ctloop.serving import decode, follow
from ctloop.serving.defaults import DEFAULT_MAX_BATCH, DEFAULT_POLL_S, DEFAULT_PORT
from ctloop.serving.follow import RegistryModel
from ctloop.serving.kserve_api import InvalidInput, kserve, logger, model_server
from ctloop.serving.model import Batch, CtloopModel, load_model
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
    _add_release_routes(model)
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


def _add_release_routes(model: CtloopModel) -> None:
    """Two routes of ctloop's own, matched before KServe's (added before ModelServer adds its
    own at start):

    - ``GET /v1/models/<name>/release``: the stage, the versions loaded (serving, canary,
      shadow, kept warm), how many loads the server did, and the shadow's counters.
    - ``POST /v2/models/<name>/versions/<v>/infer``: the V2 infer route addressed to a version,
      which KServe 0.21 declares but answers 501 ("Model versioning not supported yet",
      kserve/protocol/rest/v2_endpoints.py). Served only for a version loaded here (serving,
      canary, shadow/green, warm); another is a 404. A blue-green rollout checks its green
      here before any client request reaches it; the answer never feeds the shadow.
    """
    async def release(model_name: str) -> JSONResponse:
        if model_name != model.name:
            return JSONResponse({"error": f"model {model_name!r} is not served here; ask for "
                                          f"{model.name!r}"}, status_code=404)
        return JSONResponse(model.release_status())

    async def infer_version(model_name: str, model_version: str, request: Request
                            ) -> JSONResponse:
        target = model.addressable(model_version) if model_name == model.name else None
        if target is None:
            status = model.release_status()
            return JSONResponse({"error": (
                f"version {model_version!r} of {model_name!r} is not loaded here (serving: "
                f"{status['serving']}, canary: {(status['canary'] or {}).get('version')}, "
                f"shadow: {(status['shadow'] or {}).get('version')}, warm: "
                f"{[w['version'] for w in status['warm']]}); address one of those")},
                status_code=404)
        try:
            body = await request.json()
            columns = _v2_json_columns(body, target.features, model.max_batch)
        except InvalidInput as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except ValueError as exc:
            return JSONResponse({"error": f"the body is not JSON ({exc}); send a V2 infer "
                                          "request"}, status_code=400)
        batch = Batch(target, columns, None, time.perf_counter(), addressed=True)
        answer = await model.predict(batch)
        return JSONResponse({
            "model_name": model.name, "model_version": target.version,
            "id": body.get("id") or "",
            "outputs": [{"name": target.output_key, "datatype": "FP32",
                         "shape": [batch.rows, *target.output_shape[1:]],
                         "data": answer["predictions"] if target.output_shape == [-1] else
                         [v for row in answer["predictions"] for v in row]}],
        })

    app = model_server.app
    app.add_api_route("/v1/models/{model_name}/release", release, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/infer", infer_version,
                      methods=["POST"])


def _v2_json_columns(body: Any, features: dict[str, str], max_batch: int) -> dict[str, Any]:
    """The input columns of a V2 JSON infer body: one 1-D input per feature, ``null`` for a
    missing value (of either datatype)."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise InvalidInput('the body has no "inputs" list; send {"inputs": [{"name": ..., '
                           '"datatype": ..., "shape": [N], "data": [...]}, ...]}')
    by_name = {str(tensor.get("name")): tensor.get("data") for tensor in inputs}
    decode.check_names(by_name.keys(), "the V2 request", features)
    lengths = {name: len(by_name[name]) if isinstance(by_name[name], list) else -1
               for name in features}
    if len(set(lengths.values())) > 1 or -1 in lengths.values():
        raise InvalidInput(f"inputs have different lengths or no data list {lengths}; send "
                           "the same number of rows for every feature")
    decode.check_rows(next(iter(lengths.values())), max_batch)
    return {name: decode.column(dtype, by_name[name], f"input {name!r} data")
            for name, dtype in features.items()}
