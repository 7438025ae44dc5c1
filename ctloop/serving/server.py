"""A ctloop model (see ``ctloop.contract``) behind KServe 0.21's ModelServer.

One ``kserve.Model`` answers the V1 REST protocol (``{"instances": [{feature: value}, ...]}``),
the V2 Open Inference Protocol over REST and, when a port is given, over gRPC. Every request is
checked against the model's ``features.json`` before TensorFlow sees it, so a client mistake is an
HTTP 400 (gRPC INVALID_ARGUMENT) whose one-line message names the field and the fix. KServe's own
health routes (``/v2/health/ready``, ``/v1/models/<name>``) and Prometheus ``/metrics`` are kept.

Only the serving environment (kserve, TF) imports this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import operator
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ctloop import contract
from ctloop.contract import (
    CATEGORICAL,
    MULTICLASS,
    NUMERIC,
    OUTPUT_KEYS,
    SERVING_SIGNATURE,
    read_features,
    read_task,
)
from ctloop.errors import ConfigError, CtloopError, ModelError, RegistryError
from ctloop.registry import LocalRegistry, validate_model_name
from ctloop.serving.recorder import Recorder

DEFAULT_MAX_BATCH = 1024
# Batches of up to this many rows score on the event loop (well under a millisecond here): the
# hop to a worker thread and back cost 0.1 to 0.2 ms of a single row's 1.5 ms. Larger batches
# score in a thread, so health checks and other requests are answered meanwhile.
INLINE_ROWS = 16
# What KServe logs for every request: uvicorn's access line, and its timing and latency lines.
_REQUEST_LOGGERS = ("uvicorn.access", "kserve.trace")
# The V2 datatypes a feature of each contract dtype accepts; numbers are cast to float32.
_V2_DATATYPES = {NUMERIC: ("FP32", "FP64", "INT32", "INT64"), CATEGORICAL: ("BYTES",)}
_V1_BODY_HINT = 'send {"instances": [{"<feature>": <value>, ...}, ...]}'


# kserve.model_server runs argparse over sys.argv when imported: the caller's own CLI flags must
# not reach it, where a clash or an ambiguous prefix of a KServe flag exits the process.
_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve
    from kserve import model_server
    from kserve.errors import InvalidInput
    from kserve.logging import logger
finally:
    sys.argv = _argv


@dataclasses.dataclass(frozen=True)
class _Loaded:
    """A loaded model version: its features, task and label classes (from features.json) and
    its serving signature."""

    version: str | None
    features: dict[str, str]
    signature: Any
    task: str
    classes: list[str]

    @property
    def output_key(self) -> str:
        return OUTPUT_KEYS[self.task]

    @property
    def output_shape(self) -> list[int]:
        """The V2 shape of the output: one value per row, or one probability per class."""
        return [-1, len(self.classes)] if self.task == MULTICLASS else [-1]


@dataclasses.dataclass(frozen=True)
class _Batch:
    """A checked request: the model it was routed to, the signature's input columns and, for
    V2, the request itself."""

    target: _Loaded
    columns: dict[str, np.ndarray]
    v2_request: kserve.InferRequest | None
    started: float = 0.0  # perf_counter() when the request was checked: the recorded latency
    request_id: str | None = None  # set when a recorder records this request

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values())))


def load_model(model_dir: str | os.PathLike[str], version: str | None = None) -> _Loaded:
    """Loads features.json and the serving signature, checking one against the other.

    Raises:
        ModelError: The directory is not a SavedModel matching its features.json.
    """
    features = read_features(model_dir)
    task, classes = read_task(model_dir)
    try:
        signature = tf.saved_model.load(str(model_dir)).signatures.get(SERVING_SIGNATURE)
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise ModelError(
            f"cannot load a SavedModel from {model_dir} ({exc}); pass a model directory "
            "exported by ctloop's trainer"
        ) from exc
    if signature is None:
        raise ModelError(
            f"SavedModel {model_dir} has no {SERVING_SIGNATURE!r} signature; re-export "
            "it with ctloop's trainer"
        )
    expected = {name: tf.as_dtype(dtype).name for name, dtype in sorted(features.items())}
    specs = sorted(signature.structured_input_signature[1].items())
    actual = {name: spec.dtype.name for name, spec in specs}
    outputs = sorted(signature.structured_outputs)
    if actual != expected or OUTPUT_KEYS[task] not in outputs:
        raise ModelError(
            f"the {SERVING_SIGNATURE!r} signature of {model_dir} takes {actual} and "
            f"returns {outputs}, but features.json needs inputs {expected} and output "
            f"{OUTPUT_KEYS[task]!r}; re-export the model so both agree"
        )
    return _Loaded(version, features, signature, task, classes)


class CtloopModel(kserve.Model):
    """A contract SavedModel served over KServe's V1 and V2 protocols.

    Args:
        name: The model name in request paths (a DNS-1123 label, as in the registry).
        model_dir: The SavedModel directory that also holds ``features.json``.
        max_batch: The most rows one request may carry.
        version: The version label answers carry (``model_version``), if any.
    """

    def __init__(
        self, name: str, model_dir: str | os.PathLike[str] | None,
        max_batch: int = DEFAULT_MAX_BATCH, version: str | None = None,
    ):
        super().__init__(validate_model_name(name))
        if max_batch < 1:
            raise ConfigError(f"max batch {max_batch} is invalid: use a row count >= 1")
        self.model_dir = Path(model_dir) if model_dir else None
        self.max_batch = max_batch
        self.version = version
        self._current: _Loaded | None = None
        # Records sampled requests (inputs, answers, version, latency) when set: run_server.
        self.recorder: Recorder | None = None

    @property
    def features(self) -> dict[str, str]:
        """The features of the model that serves (the V2 metadata describes it)."""
        return self._current.features if self._current else {}

    def load(self) -> bool:
        """Loads the model; raises ModelError if it breaks the contract."""
        self._current = load_model(self.model_dir, self.version)
        self.ready = True
        return self.ready

    def route(self) -> _Loaded:
        """The loaded model that answers the next request."""
        return self._current

    def get_input_types(self) -> list[dict[str, Any]]:
        """The V2 model metadata of the inputs: one 1-D tensor per feature."""
        return [
            {"name": name, "datatype": "FP32" if dtype == NUMERIC else "BYTES", "shape": [-1]}
            for name, dtype in self.features.items()
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        """The V2 model metadata of the output, by task: ``probability`` (binary),
        ``probabilities`` per class (multiclass) or ``prediction`` (regression)."""
        if not self._current:
            return []
        return [{"name": self._current.output_key, "datatype": "FP32",
                 "shape": self._current.output_shape}]

    def preprocess(
        self,
        payload: dict[str, Any] | bytes | kserve.InferRequest,
        headers: dict[str, str] | None = None,
    ) -> _Batch:
        """Checks a V1 body or V2 request against the features and converts it to input columns.

        Args:
            payload: The V1 JSON body (decoded, or raw bytes when KServe did not recognize its
                Content-Type as JSON) or a V2 InferRequest.
            headers: The request headers; ``x-request-id``, when sent, is the id a recorded
                request is kept under (otherwise the V2 request's id, or a new one).

        Returns:
            The batch to score.

        Raises:
            InvalidInput: The request does not fit the model's features (KServe answers 400).
        """
        started = time.perf_counter()
        target = self.route()
        if isinstance(payload, kserve.InferRequest):
            batch = _Batch(target, self._v2_columns(payload, target.features), payload, started)
        else:
            batch = _Batch(target, self._v1_columns(payload, target.features), None, started)
        if self.recorder is not None and self.recorder.sampled():
            request_id = (headers or {}).get("x-request-id") or (
                batch.v2_request.id if batch.v2_request else None) or uuid.uuid4().hex
            batch = dataclasses.replace(batch, request_id=request_id)
        return batch

    async def predict(
        self, payload: _Batch, headers: dict[str, str] | None = None
    ) -> dict[str, list[float]] | kserve.InferResponse:
        """Scores a checked batch.

        Args:
            payload: The batch from ``preprocess``.
            headers: The request headers (unused).

        Returns:
            ``{"predictions": [...]}`` for V1, one answer per row: a probability (binary), a
            list of probabilities in the order of the label classes (multiclass), or a value
            (regression); for V2, a response with the task's one FP32 output, of shape [N] or
            [N, classes] (its data row-major). A recorded V1 request's answer also carries its
            ``request_id`` (V2: the response id), the key of label feedback.
        """
        target = payload.target
        if payload.rows <= INLINE_ROWS:
            answers = _score(target, payload.columns)
        else:  # TF releases the GIL while it runs: the event loop keeps answering meanwhile
            answers = await asyncio.to_thread(_score, target, payload.columns)
        request, version = payload.v2_request, target.version
        if payload.request_id is not None:
            latency_ms = (time.perf_counter() - payload.started) * 1000
            self.recorder.record(payload.request_id, version, latency_ms, payload.columns, answers)
        if request is None:
            if payload.request_id is not None:
                return {"predictions": answers.tolist(), "model_version": version,
                        "request_id": payload.request_id}
            return {"predictions": answers.tolist(), "model_version": version}
        return kserve.InferResponse(
            response_id=payload.request_id or request.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=version,
            # A list, not an ndarray: KServe 0.21's to_grpc takes an ndarray's truth value (and
            # fails) when it answers raw gRPC inputs with raw outputs.
            infer_outputs=[
                kserve.InferOutput(target.output_key, list(answers.shape), "FP32",
                                   answers.ravel().tolist())
            ],
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )

    def _v1_columns(self, body: Any, features: dict[str, str]) -> dict[str, np.ndarray]:
        if isinstance(body, (bytes, str)):
            # KServe hands the body over undecoded when Content-Type is not exactly one of its
            # JSON types, e.g. "application/json; charset=utf-8".
            try:
                body = json.loads(body)
            except ValueError as exc:
                raise InvalidInput(
                    f"request body is not valid JSON ({exc}); {_V1_BODY_HINT}"
                ) from exc
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list):
            raise InvalidInput(f'request body has no list "instances"; {_V1_BODY_HINT}')
        self._check_rows(len(instances))
        names = features.keys()
        # One pass over the rows in C when every row is an object with exactly the features;
        # otherwise the row-by-row checks find the first row that is not, and say why.
        if set(map(type, instances)) != {dict} or not all(
                row.keys() == names for row in instances):
            for i, row in enumerate(instances):
                if not isinstance(row, dict):
                    raise InvalidInput(
                        f"instances[{i}] is a JSON {type(row).__name__}; send an object mapping "
                        "each feature name to its value"
                    )
                self._check_names(row.keys(), f"instances[{i}]", features)
        return {
            name: _column(dtype, list(map(operator.itemgetter(name), instances)),
                          f"feature {name!r} in instances")
            for name, dtype in features.items()
        }

    def _v2_columns(self, request: kserve.InferRequest, features: dict[str, str]
                    ) -> dict[str, np.ndarray]:
        inputs = {}
        for tensor in request.inputs:
            if tensor.name in inputs:
                raise InvalidInput(
                    f"input {tensor.name!r} appears twice; send one input per feature"
                )
            inputs[tensor.name] = tensor
        self._check_names(inputs.keys(), "the V2 request", features)
        for name, dtype in features.items():
            tensor = inputs[name]
            allowed = _V2_DATATYPES[dtype]
            if tensor.datatype not in allowed:
                raise InvalidInput(
                    f"input {name!r} has datatype {tensor.datatype}; send {' or '.join(allowed)} "
                    f"for this {'numeric' if dtype == NUMERIC else 'string'} feature"
                )
            if len(tensor.shape) != 1:
                raise InvalidInput(
                    f"input {name!r} has shape {tensor.shape}; send a 1-D shape [N], one value "
                    "per row"
                )
        lengths = {name: inputs[name].shape[0] for name in features}
        if len(set(lengths.values())) > 1:
            raise InvalidInput(
                f"inputs have different lengths {lengths}; send the same number of rows for "
                "every feature"
            )
        self._check_rows(next(iter(lengths.values())))
        columns = {}
        for name, dtype in features.items():
            tensor = inputs[name]
            try:
                # as_numpy reads every V2 encoding alike: JSON data, binary extension, gRPC raw.
                values = tensor.as_numpy()
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"input {name!r} data does not fit shape {tensor.shape} and datatype "
                    f"{tensor.datatype} ({exc}); send {tensor.shape[0]} such values"
                ) from exc
            if dtype == NUMERIC and values.dtype.kind in "iuf":
                # Through float64, as float() of each value would go: one rounding to float32.
                columns[name] = values.astype(np.float64).astype(np.float32)
            else:
                columns[name] = _column(dtype, values.tolist(), f"input {name!r} data")
        return columns

    def _check_rows(self, rows: int) -> None:
        if not 1 <= rows <= self.max_batch:
            raise InvalidInput(
                f"request has {rows} rows; send 1 to {self.max_batch} rows per request "
                "(split larger batches)"
            )

    @staticmethod
    def _check_names(names: Collection[str], where: str, features: dict[str, str]) -> None:
        missing = [name for name in features if name not in names]
        if missing:
            raise InvalidInput(
                f"{where} lacks feature(s) {', '.join(missing)}; send every feature of "
                f"{list(features)}, null for a missing value"
            )
        unknown = sorted(set(names) - features.keys())
        if unknown:
            raise InvalidInput(
                f"{where} has unknown feature(s) {', '.join(unknown)}; send only "
                f"{list(features)}"
            )


class RegistryModel(CtloopModel):
    """Serves a registry's serving version and follows it: a new version, or a canary taking a
    share of requests, is loaded in the background and swapped in by reference, so requests in
    flight finish on the model they started with and none is dropped.

    Args:
        name: The registered model name (also the name in request paths).
        registry_root: The registry root.
        max_batch: The most rows one request may carry.
        poll_s: How often the registry's pointers are read.
        seed: Seed of the canary routing draw (None: from the OS).
    """

    def __init__(self, name: str, registry_root: str | os.PathLike[str],
                 max_batch: int = DEFAULT_MAX_BATCH, poll_s: float = 1.0,
                 seed: int | None = None):
        super().__init__(name, None, max_batch)
        self.registry = LocalRegistry(registry_root, name)
        self.poll_s = poll_s
        self._canary: tuple[_Loaded, int] | None = None
        self._draw = random.Random(seed)

    def load(self) -> bool:
        if self.registry.serving() is None:
            raise RegistryError(
                f"registry {self.registry.path} has no serving version of {self.name!r}; run the "
                "pipeline first to train and push one, or check the registry path and model name"
            )
        self.sync()
        threading.Thread(target=self._follow, name="registry-follower", daemon=True).start()
        self.ready = True
        return self.ready

    def route(self) -> _Loaded:
        canary = self._canary
        if canary and self._draw.random() * 100 < canary[1]:
            return canary[0]
        return self._current

    def sync(self) -> None:
        """Loads what the registry's pointers name now, if it is not loaded yet."""
        serving = self.registry.serving()
        if serving and (self._current is None or self._current.version != str(serving.number)):
            self._current = load_model(serving.model_dir, str(serving.number))
            logger.info("serving version %d of %r", serving.number, self.name)
        canary = self.registry.canary()
        if canary is None:
            if self._canary:
                logger.info("canary version %s ended", self._canary[0].version)
            self._canary = None
        elif self._canary is None or (self._canary[0].version, self._canary[1]) != (
                str(canary[0].number), canary[1]):
            loaded = (self._current if self._current.version == str(canary[0].number)
                      else load_model(canary[0].model_dir, str(canary[0].number)))
            self._canary = (loaded, canary[1])
            logger.info("canary version %d takes %d%% of requests", canary[0].number, canary[1])

    def _follow(self) -> None:
        while True:
            time.sleep(self.poll_s)
            try:
                self.sync()
            except (CtloopError, OSError) as exc:
                # Unknown state: keep serving what serves now, and say why on every poll.
                logger.error("registry %s not followed: %s", self.registry.path, exc)


def _score(target: _Loaded, columns: dict[str, np.ndarray]) -> np.ndarray:
    inputs = {name: tf.constant(values) for name, values in columns.items()}
    return target.signature(**inputs)[target.output_key].numpy()


def _column(dtype: str, values: list[Any], where: str) -> np.ndarray:
    try:
        return contract.column(dtype, values, where)
    except contract.InputError as exc:
        raise InvalidInput(str(exc)) from exc


async def _invalid_v2_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI rejects a V2 body that misses KServe's pydantic schema with a 422 and a list of
    # errors; answer like every other bad request here: 400 {"error": "<one line>"}.
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        error, position = first["ctx"]["error"], first["loc"][-1]
        problem = f"request body is not valid JSON ({error} at character {position})"
    else:
        problem = f"request field {'.'.join(map(str, first['loc']))}: {first['msg']}"
    fix = 'send {"inputs": [{"name": ..., "shape": [N], "datatype": ..., "data": [...]}, ...]}'
    return JSONResponse(status_code=400, content={"error": f"{problem}; {fix}"})


# KServe serves this module-level app.
model_server.app.add_exception_handler(RequestValidationError, _invalid_v2_request)


def resolve_model_dir(
    registry_root: str | os.PathLike[str], model_name: str, version: int | None = None
) -> Path:
    """The SavedModel directory of a registry version.

    Args:
        registry_root: The registry root (the folder holding ``<model_name>/``).
        model_name: The registered model name.
        version: A version number; None for the version the serving pointer names.

    Returns:
        The version's model directory.

    Raises:
        RegistryError: The registry has no serving version, or not the requested one.
    """
    registry = LocalRegistry(registry_root, model_name)
    if version is None:
        serving = registry.serving()
        if serving is None:
            raise RegistryError(
                f"registry {registry.path} has no serving version of {model_name!r}; run the "
                "pipeline first to train and push one, or check the registry path and model name"
            )
        return serving.model_dir
    found = next((v for v in registry.versions() if v.number == version), None)
    if found is None:
        raise RegistryError(
            f"version {version} of {model_name!r} is not in {registry.path}; choose one of "
            f"{[v.number for v in registry.versions()]}"
        )
    return found.model_dir


def run_server(model: CtloopModel, http_port: int = 8080, grpc_port: int | None = None,
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
    grpc = {"enable_grpc": False} if grpc_port is None else {"grpc_port": grpc_port}
    server = kserve.ModelServer(http_port=http_port, enable_latency_logging=request_log, **grpc)
    if not request_log:  # ModelServer has just configured these loggers
        for name in _REQUEST_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    source = (f"registry {model.registry.path} (following it)"
              if isinstance(model, RegistryModel) else str(model.model_dir))
    # KServe's logger: ModelServer has just configured its handler and format.
    logger.info(
        "ctloop serving model %r from %s on HTTP port %d (gRPC %s, max batch %d); loaded in %.1f s",
        model.name,
        source,
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
