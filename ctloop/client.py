"""A small client of the model server's V1 protocol: send rows, time single-row requests.

Standard library only, so it runs in both environments.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ctloop.errors import CtloopError


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
    """POSTs a V1 predict request; returns the whole answer (predictions and model_version)."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v1/models/{model_name}:predict",
        data=json.dumps({"instances": instances}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CtloopError(
            f"model server {url} answered {exc.code}: {exc.read().decode(errors='replace')}"
        ) from exc
    except urllib.error.URLError as exc:
        raise CtloopError(
            f"model server {url} is not reachable ({exc.reason}); start it with `ctloop serve`"
        ) from exc


def predict_file(url: str, model_name: str, path: Path, rows: int, drop: list[str], repeat: int
                 ) -> dict[str, Any]:
    """Sends ``rows`` rows in one request, then times ``repeat`` single-row requests."""
    instances = rows_from_file(path, rows, drop)
    answer = predict_raw(url, model_name, instances)
    latencies = []
    for i in range(repeat):
        started = time.perf_counter()
        predict(url, model_name, [instances[i % len(instances)]])
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {
        "instances": instances,
        "predictions": answer["predictions"],
        "model_version": answer.get("model_version"),
        "latency_ms": {
            "p50": latencies[len(latencies) // 2] if latencies else None,
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            if latencies else None,
            "requests": len(latencies),
        },
    }


def describe(result: dict[str, Any]) -> str:
    by = f" by version {result['model_version']}" if result.get("model_version") else ""
    lines = [f"served predictions (P(positive class)){by}:"]
    for row, score in zip(result["instances"], result["predictions"], strict=True):
        shown = ", ".join(f"{k}={v}" for k, v in list(row.items())[:4])
        lines.append(f"  {score:.4f}  <- {shown}, ...")
    latency = result["latency_ms"]
    if latency["requests"]:
        lines.append(
            f"single-row latency over {latency['requests']} requests: "
            f"p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms"
        )
    return "\n".join(lines)
