"""The serving section: the KServe model server (serving environment) under concurrent clients,
against the same model called in-process.

Clients are threads of this process sending V1 requests with ``ctloop.client`` (the client
infra validation uses, which keeps its connections alive and reuses them); they share the
machine's cores with the server, as they do in infra validation.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import resource
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bench.measure import machine_busy_s
from bench.report import latency_summary

WARMUP_REQUESTS = 20
STARTUP_TIMEOUT_S = 180.0


def measure(serving_python: str, model_dir: str, eval_path: str, model_name: str,
            clients: list[int], requests: int, batch_rows: int, workdir: Path,
            repo: Path) -> dict[str, Any]:
    """Serves ``model_dir``; measures single-row and batch requests at each client count, the
    in-process call, and, for scale, the server's readiness route (no model call).

    Args:
        serving_python: The serving environment's python.
        model_dir: The model to serve.
        eval_path: Eval rows (Parquet): the requests' rows.
        model_name: The model's name in request paths.
        clients: Concurrent client counts.
        requests: Requests per (request kind, client count).
        batch_rows: Rows per batch request.
        workdir: Where the rows file and the server log go.
        repo: The repository root (the in-process child runs ``-m bench.inprocess`` there).
    """
    import pandas as pd

    from ctloop import client, contract, server_process

    busy_before, own_before = machine_busy_s(), _own_cpu_s()
    features = list(contract.read_features(model_dir))
    frame = pd.read_parquet(eval_path, columns=features).head(max(256, batch_rows * 8))
    rows = json.loads(frame.to_json(orient="records"))  # NaN -> null
    rows_file = workdir / "serving-rows.json"
    rows_file.write_text(json.dumps(rows))

    in_process = json.loads(subprocess.run(
        [serving_python, "-m", "bench.inprocess", "--model-dir", model_dir, "--rows",
         str(rows_file), "--batch-rows", str(batch_rows), "--calls", str(requests)],
        cwd=repo, check=True, capture_output=True, text=True).stdout)

    served: dict[str, dict[int, dict[str, float]]] = {"single": {}, "batch": {}}
    with server_process.serve(serving_python, model_name, model_dir=model_dir,
                              log_path=str(workdir / "server.log")) as server:
        startup_s = server.wait_ready(model_name, STARTUP_TIMEOUT_S)
        for i in range(WARMUP_REQUESTS):
            client.predict(server.url, model_name, [rows[i % len(rows)]])
        # The server without the model, over one kept-alive connection as ctloop.client sends:
        # the cost of HTTP and routing alone.
        connection = http.client.HTTPConnection(urllib.parse.urlsplit(server.url).netloc,
                                                timeout=30)
        latencies, started = [], time.perf_counter()
        for _ in range(requests):
            request_started = time.perf_counter()
            connection.request("GET", f"/v1/models/{model_name}")
            connection.getresponse().read()
            latencies.append((time.perf_counter() - request_started) * 1000)
        readiness = latency_summary(latencies, time.perf_counter() - started, 0)
        connection.close()
        for kind, size in (("single", 1), ("batch", batch_rows)):
            batches = [rows[i:i + size] for i in range(0, len(rows) - size + 1, size)]

            def one(i: int, batches=batches) -> float:
                started = time.perf_counter()
                client.predict(server.url, model_name, batches[i % len(batches)])
                return (time.perf_counter() - started) * 1000

            for count in clients:
                started = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(count) as pool:
                    latencies = list(pool.map(one, range(requests)))
                served[kind][count] = latency_summary(
                    latencies, time.perf_counter() - started, size)
        server_peak_mb = _peak_rss_mb(server.process.pid)
    # The clients (this process), the server and the in-process child against everything else.
    others = machine_busy_s() - busy_before - (_own_cpu_s() - own_before)
    return {"startup_s": startup_s, "server_peak_mb": server_peak_mb, "batch_rows": batch_rows,
            "served": served, "in_process": in_process, "readiness_get": readiness,
            "others_cpu_s": max(0.0, others)}


def _own_cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (the server, the in-process
    child)."""
    own, children = (resource.getrusage(who)
                     for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_rss_mb(pid: int) -> float | None:
    """The process's resident-set high-water mark (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None
