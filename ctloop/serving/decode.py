"""Checking a request against a model's features and turning it into the signature's input
columns: the V1 REST protocol (``{"instances": [{feature: value}, ...]}``) and the V2 Open
Inference Protocol (one 1-D tensor per feature, over REST or gRPC).

A client mistake is an ``InvalidInput`` (KServe answers HTTP 400, gRPC INVALID_ARGUMENT) whose
one-line message names the field and the fix, raised before TensorFlow sees anything. Only the
serving environment (kserve) imports this module.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Collection
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ctloop import contract
from ctloop.contract import CATEGORICAL, NUMERIC
from ctloop.serving.kserve_api import InvalidInput, kserve

# The V2 datatypes a feature of each contract dtype accepts; numbers are cast to float32.
V2_DATATYPES = {NUMERIC: ("FP32", "FP64", "INT32", "INT64"), CATEGORICAL: ("BYTES",)}
_V1_BODY_HINT = 'send {"instances": [{"<feature>": <value>, ...}, ...]}'


def v1_columns(body: Any, features: dict[str, str], max_batch: int) -> dict[str, np.ndarray]:
    """The input columns of a V1 body: decoded JSON, or raw bytes when KServe did not recognize
    its Content-Type as JSON (e.g. ``application/json; charset=utf-8``)."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise InvalidInput(f"request body is not valid JSON ({exc}); {_V1_BODY_HINT}") from exc
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list):
        raise InvalidInput(f'request body has no list "instances"; {_V1_BODY_HINT}')
    check_rows(len(instances), max_batch)
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
            check_names(row.keys(), f"instances[{i}]", features)
    return {
        name: column(dtype, list(map(operator.itemgetter(name), instances)),
                     f"feature {name!r} in instances")
        for name, dtype in features.items()
    }


def v2_columns(request: kserve.InferRequest, features: dict[str, str], max_batch: int
               ) -> dict[str, np.ndarray]:
    """The input columns of a V2 request: one 1-D input per feature, of its datatype."""
    inputs = {}
    for tensor in request.inputs:
        if tensor.name in inputs:
            raise InvalidInput(f"input {tensor.name!r} appears twice; send one input per feature")
        inputs[tensor.name] = tensor
    check_names(inputs.keys(), "the V2 request", features)
    for name, dtype in features.items():
        tensor = inputs[name]
        allowed = V2_DATATYPES[dtype]
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
    check_rows(next(iter(lengths.values())), max_batch)
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
            columns[name] = column(dtype, values.tolist(), f"input {name!r} data")
    return columns


def check_rows(rows: int, max_batch: int) -> None:
    if not 1 <= rows <= max_batch:
        raise InvalidInput(
            f"request has {rows} rows; send 1 to {max_batch} rows per request "
            "(split larger batches)"
        )


def check_names(names: Collection[str], where: str, features: dict[str, str]) -> None:
    missing = [name for name in features if name not in names]
    if missing:
        raise InvalidInput(
            f"{where} lacks feature(s) {', '.join(missing)}; send every feature of "
            f"{list(features)}, null for a missing value"
        )
    unknown = sorted(set(names) - features.keys())
    if unknown:
        raise InvalidInput(
            f"{where} has unknown feature(s) {', '.join(unknown)}; send only {list(features)}"
        )


def column(dtype: str, values: list[Any], where: str) -> np.ndarray:
    try:
        return contract.column(dtype, values, where)
    except contract.InputError as exc:
        raise InvalidInput(str(exc)) from exc


async def invalid_v2_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI rejects a V2 body that misses KServe's pydantic schema with a 422 and a list of
    errors; this answers like every other bad request here: 400 {"error": "<one line>"}."""
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        error, position = first["ctx"]["error"], first["loc"][-1]
        problem = f"request body is not valid JSON ({error} at character {position})"
    else:
        problem = f"request field {'.'.join(map(str, first['loc']))}: {first['msg']}"
    fix = 'send {"inputs": [{"name": ..., "shape": [N], "datatype": ..., "data": [...]}, ...]}'
    return JSONResponse(status_code=400, content={"error": f"{problem}; {fix}"})
