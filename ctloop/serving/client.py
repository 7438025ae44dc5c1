"""A small client of the model server's V1 protocol: send rows, time single-row requests.

Standard library only, so it runs in both environments. Connections are kept alive and reused:
each server gets a pool of idle connections that every thread shares (infra validation's load
test and the canary probe send from thread pools). A request takes an idle connection, or opens
one, and puts it back once the answer is read. A kept connection that the server has closed
meanwhile (its keep-alive timeout) is replaced by a new one, once. Connections go straight to the
server: ``HTTP(S)_PROXY`` is not used.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ctloop.errors import CtloopError

IDLE_CONNECTIONS = 32  # idle connections kept per server; more are closed after use
# What writing to or reading from a kept connection raises when the server closed it meanwhile
# (RemoteDisconnected is a ConnectionResetError).
_CLOSED_BY_SERVER = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

_idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
_idle_lock = threading.Lock()

def rows_from_file(path: Path, rows: int, drop: list[str]) -> list[dict[str, Any]]:
    """The first ``rows`` rows of a CSV/Parquet file as JSON-ready dicts (missing -> null)."""
    import pandas as pd

    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    frame = frame.drop(columns=[c for c in drop if c in frame.columns]).head(rows)
    return json.loads(frame.to_json(orient="records"))  # NaN -> null


def predict(url: str, model_name: str, instances: list[dict[str, Any]], timeout_s: float = 30.0
            ) -> list[float]:
    """POSTs a V1 predict request; returns the predictions."""
    return predict_raw(url, model_name, instances, timeout_s)["predictions"]


def predict_raw(url: str, model_name: str, instances: list[dict[str, Any]],
                timeout_s: float = 30.0) -> dict[str, Any]:
    """POSTs a V1 predict request; returns the whole answer (predictions and model_version).

    Raises:
        CtloopError: The server is not reachable, dropped the connection, did not answer within
            ``timeout_s``, or answered with an error status.
    """
    parts = _split(url)
    path = f"{parts.path.rstrip('/')}/v1/models/{model_name}:predict"
    body = json.dumps({"instances": instances}).encode()
    status, answer = _post((parts.scheme, parts.netloc), url, path, body, timeout_s)
    if not 200 <= status < 300:
        raise CtloopError(
            f"model server {url} answered {status}: {answer.decode(errors='replace')}"
        )
    return json.loads(answer)


def predict_version(url: str, model_name: str, version: str, instances: list[dict[str, Any]],
                    timeout_s: float = 30.0) -> dict[str, Any]:
    """POSTs a V2 infer request addressed to ``version``
    (``/v2/models/<name>/versions/<v>/infer``): the way to check a version loaded beside the
    serving one (blue-green's green) before any client request reaches it. Numeric columns go
    as FP32, others as BYTES, null for a missing value.

    Raises:
        CtloopError: As ``predict_raw``; a 404 when the server has no such version loaded.
    """
    parts = _split(url)
    names = list(instances[0]) if instances else []
    inputs = []
    for name in names:
        data = [row.get(name) for row in instances]
        numeric = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                      for v in data)
        inputs.append({"name": name, "datatype": "FP32" if numeric else "BYTES",
                       "shape": [len(data)], "data": data})
    path = f"{parts.path.rstrip('/')}/v2/models/{model_name}/versions/{version}/infer"
    status, answer = _post((parts.scheme, parts.netloc), url, path,
                           json.dumps({"inputs": inputs}).encode(), timeout_s)
    if not 200 <= status < 300:
        raise CtloopError(
            f"model server {url} answered {status}: {answer.decode(errors='replace')}")
    return json.loads(answer)


def release_status(url: str, model_name: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The server's ``GET /v1/models/<name>/release``: stage, loaded versions, loads, shadow
    counters.

    Raises:
        CtloopError: The server is not reachable or answered with an error status.
    """
    parts = _split(url)
    target = f"{url.rstrip('/')}/v1/models/{model_name}/release"
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CtloopError(f"model server {url} answered {exc.code} for {target}: "
                          f"{exc.read().decode(errors='replace')}; is it `ctloop serve` of "
                          f"model {model_name!r}?") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise CtloopError(f"model server {parts.netloc} is not reachable ({exc}); start it "
                          "with `ctloop serve`") from exc


def _split(url: str) -> urllib.parse.SplitResult:
    """``url``'s parts, or a CtloopError if it is not a usable http(s) URL."""
    parts = urllib.parse.urlsplit(url)
    try:
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number from 0 to 65535
        usable = False
    if not usable:
        raise CtloopError(
            f"model server URL {url!r} is not an http(s) URL; pass one like http://127.0.0.1:8080"
        )
    return parts


def _post(origin: tuple[str, str], url: str, path: str, body: bytes, timeout_s: float
          ) -> tuple[int, bytes]:
    """Sends one POST to ``origin`` on a kept connection, else a new one; returns (status,
    body)."""
    kept = _take(origin)
    if kept is not None:
        try:
            return _exchange(origin, kept, path, body, timeout_s)
        except _CLOSED_BY_SERVER:
            pass  # the server closed the idle connection meanwhile: send again on a new one
        except (OSError, http.client.HTTPException) as exc:
            raise _lost(url, timeout_s, exc) from exc
    scheme, netloc = origin
    kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    connection = kind(netloc, timeout=timeout_s)
    try:
        connection.connect()
    except OSError as exc:
        raise CtloopError(
            f"model server {url} is not reachable ({exc}); start it with `ctloop serve`"
        ) from exc
    try:
        return _exchange(origin, connection, path, body, timeout_s)
    except (OSError, http.client.HTTPException) as exc:
        raise _lost(url, timeout_s, exc) from exc


def _exchange(origin: tuple[str, str], connection: http.client.HTTPConnection, path: str,
              body: bytes, timeout_s: float) -> tuple[int, bytes]:
    """Sends the POST on an open connection and reads the answer; keeps the connection if it
    stays open, closes it on any failure."""
    try:
        connection.sock.settimeout(timeout_s)
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
    except BaseException:
        connection.close()
        raise
    _give(origin, connection)
    return response.status, answer


def _lost(url: str, timeout_s: float, exc: Exception) -> CtloopError:
    """The error for a connection that failed after it was open: no answer in time, or
    dropped."""
    if isinstance(exc, TimeoutError):
        return CtloopError(
            f"model server {url} did not answer within {timeout_s:g} s; check its load and log, "
            "or allow a longer timeout"
        )
    return CtloopError(
        f"model server {url} dropped the connection ({type(exc).__name__}: {exc}); check that "
        "it is still running (its log says why it stopped), then send the request again"
    )


def _take(origin: tuple[str, str]) -> http.client.HTTPConnection | None:
    """An idle kept connection to ``origin``, if there is one."""
    with _idle_lock:
        idle = _idle.get(origin)
        return idle.pop() if idle else None


def _give(origin: tuple[str, str], connection: http.client.HTTPConnection) -> None:
    """Keeps ``connection`` for the next request, unless the server closed it or enough are
    kept."""
    if connection.sock is None:  # the server answered with "Connection: close"
        return
    with _idle_lock:
        idle = _idle.setdefault(origin, [])
        if len(idle) < IDLE_CONNECTIONS:
            idle.append(connection)
            return
    connection.close()


def predict_rows(url: str, model_name: str, instances: list[dict[str, Any]], repeat: int
                 ) -> dict[str, Any]:
    """Sends ``instances`` in one request, then times ``repeat`` single-row requests."""
    answer = predict_raw(url, model_name, instances)
    latencies = []
    for i in range(repeat):
        started = time.perf_counter()
        predict(url, model_name, [instances[i % len(instances)]])
        latencies.append((time.perf_counter() - started) * 1000)
    return {
        "instances": instances,
        "predictions": answer["predictions"],
        "model_version": answer.get("model_version"),
        "latency_ms": {
            "p50": percentile(latencies, 50) if latencies else None,
            "p99": percentile(latencies, 99) if latencies else None,
            "requests": len(latencies),
        },
    }


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``: the smallest measured
    value that at least ``q`` percent of them do not exceed. ctloop's one definition of p50 and
    p99: infra validation, the canary, ``ctloop predict``, monitoring and the benchmarks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def describe(result: dict[str, Any]) -> str:
    by = f" by version {result['model_version']}" if result.get("model_version") else ""
    lines = [f"served predictions{by} (binary: P(positive class); multiclass: P(each class); "
             "regression: the value):"]
    for row, answer in zip(result["instances"], result["predictions"], strict=True):
        shown = ", ".join(f"{k}={v}" for k, v in list(row.items())[:4])
        values = answer if isinstance(answer, list) else [answer]
        lines.append(f"  {' '.join(f'{v:.4f}' for v in values)}  <- {shown}, ...")
    latency = result["latency_ms"]
    if latency["requests"]:
        lines.append(
            f"single-row latency over {latency['requests']} requests: "
            f"p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms"
        )
    return "\n".join(lines)
