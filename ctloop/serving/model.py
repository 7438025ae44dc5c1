"""A ctloop model (see ``ctloop.contract``) as a ``kserve.Model``: ``CtloopModel`` serves one
model folder over the V1 and V2 protocols (requests checked by ``ctloop.serving.decode``).

Only the serving environment (kserve, TF) imports this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ctloop.contract import (
    MULTICLASS,
    NUMERIC,
    OUTPUT_KEYS,
    SERVING_SIGNATURE,
    read_features,
    read_task,
)
from ctloop.errors import ConfigError, ModelError
from ctloop.registry import validate_model_name
from ctloop.serving import decode
from ctloop.serving.defaults import DEFAULT_MAX_BATCH
from ctloop.serving.kserve_api import kserve
from ctloop.serving.recorder import Recorder

# Batches of up to this many rows score on the event loop (well under a millisecond here): the
# hop to a worker thread and back cost 0.1 to 0.2 ms of a single row's 1.5 ms. Larger batches
# score in a thread, so health checks and other requests are answered meanwhile.
INLINE_ROWS = 16


@dataclasses.dataclass(frozen=True)
class Loaded:
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
class Batch:
    """A checked request: the model it was routed to, the signature's input columns and, for
    V2, the request itself."""

    target: Loaded
    columns: dict[str, np.ndarray]
    v2_request: kserve.InferRequest | None
    started: float = 0.0  # perf_counter() when the request was checked: the recorded latency
    request_id: str | None = None  # set when a recorder records this request
    addressed: bool = False  # sent to a version explicitly (a check), not routed traffic

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values())))


def load_model(model_dir: str | os.PathLike[str], version: str | None = None) -> Loaded:
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
    return Loaded(version, features, signature, task, classes)


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
        self._current: Loaded | None = None
        # Records sampled requests (inputs, answers, version, latency) when set: run_server.
        self.recorder: Recorder | None = None

    @property
    def source(self) -> str:
        """Where the model comes from, for the server's first log line."""
        return str(self.model_dir)

    @property
    def features(self) -> dict[str, str]:
        """The features of the model that serves (the V2 metadata describes it)."""
        return self._current.features if self._current else {}

    def load(self) -> bool:
        """Loads the model; raises ModelError if it breaks the contract."""
        self._current = load_model(self.model_dir, self.version)
        self.ready = True
        return self.ready

    def route(self) -> Loaded:
        """The loaded model that answers the next request."""
        return self._current

    def addressable(self, version: str) -> Loaded | None:
        """The loaded model of ``version`` if requests may address it by version, else None."""
        current = self._current
        return current if current is not None and current.version == version else None

    def observe(self, batch: Batch, answers: np.ndarray) -> None:
        """Called with each answered batch, after scoring (a follower feeds its shadow)."""

    def release_status(self) -> dict[str, Any]:
        """What serves, for the server's release route."""
        return {"model": self.name, "stage": None, "serving": self.version, "canary": None,
                "shadow": None, "warm": [], "warm_s": 0, "loads": 1 if self._current else 0}

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
    ) -> Batch:
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
            columns = decode.v2_columns(payload, target.features, self.max_batch)
            batch = Batch(target, columns, payload, started)
        else:
            columns = decode.v1_columns(payload, target.features, self.max_batch)
            batch = Batch(target, columns, None, started)
        if self.recorder is not None and self.recorder.sampled():
            request_id = (headers or {}).get("x-request-id") or (
                batch.v2_request.id if batch.v2_request else None) or uuid.uuid4().hex
            batch = dataclasses.replace(batch, request_id=request_id)
        return batch

    async def predict(
        self, payload: Batch, headers: dict[str, str] | None = None
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
            answers = score(target, payload.columns)
        else:  # TF releases the GIL while it runs: the event loop keeps answering meanwhile
            answers = await asyncio.to_thread(score, target, payload.columns)
        self.observe(payload, answers)
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


def score(target: Loaded, columns: dict[str, np.ndarray]) -> np.ndarray:
    inputs = {name: tf.constant(values) for name, values in columns.items()}
    return target.signature(**inputs)[target.output_key].numpy()
