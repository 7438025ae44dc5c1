"""The serving section: the KServe model server (serving environment) under concurrent clients,
against the same model called in-process.

Clients are threads of this process sending V1 requests with ``ctloop.serving.client`` (the client
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
import urllib.request
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

    from ctloop import contract
    from ctloop.serving import client
    from ctloop.serving import process as server_process

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
        # The server without the model, over one kept-alive connection as ctloop.serving.client
        # sends: the cost of HTTP and routing alone.
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
    recording = recording_cost(serving_python, model_dir, model_name, rows, requests, workdir)
    print(recording_table(recording))
    # The clients (this process), the server and the in-process child against everything else.
    others = machine_busy_s() - busy_before - (_own_cpu_s() - own_before)
    return {"startup_s": startup_s, "server_peak_mb": server_peak_mb, "batch_rows": batch_rows,
            "served": served, "in_process": in_process, "readiness_get": readiness,
            "recording": recording, "others_cpu_s": max(0.0, others)}


RECORDING_CLIENTS = (1, 4)


def recording_cost(serving_python: str, model_dir: str, model_name: str, rows: list[dict],
                   requests: int, workdir: Path) -> dict[str, Any]:
    """Single-row latency of one server without and then with ``--record-dir`` (every request
    recorded), at 1 and 4 concurrent clients: what the request sink costs a request.

    Returns:
        ``{"off"|"on": {clients: latency summary}, "records": {"written", "dropped", "bytes"}}``.
    """
    from ctloop.serving import client
    from ctloop.serving import process as server_process

    found: dict[str, Any] = {}
    for mode in ("off", "on"):
        record_dir = workdir / "records"
        port = server_process.free_port()
        command = [serving_python, "-m", "ctloop.cli", "serve", "--model-dir", model_dir,
                   "--model-name", model_name, "--port", str(port),
                   *(["--record-dir", str(record_dir)] if mode == "on" else [])]
        log = workdir / f"server-record-{mode}.log"
        with open(log, "w") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        server = server_process.ServerProcess(process, f"http://127.0.0.1:{port}", log)
        try:
            server.wait_ready(model_name, STARTUP_TIMEOUT_S)
            for i in range(WARMUP_REQUESTS):
                client.predict(server.url, model_name, [rows[i % len(rows)]])

            def one(i: int, url=server.url) -> float:
                started = time.perf_counter()
                client.predict(url, model_name, [rows[i % len(rows)]])
                return (time.perf_counter() - started) * 1000

            found[mode] = {}
            for count in RECORDING_CLIENTS:
                started = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(count) as pool:
                    latencies = list(pool.map(one, range(requests)))
                found[mode][count] = latency_summary(latencies, time.perf_counter() - started, 1)
            if mode == "on":
                with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as answer:
                    metrics = answer.read().decode()
                found["records"] = {
                    name: float(next((line.split()[-1] for line in metrics.splitlines()
                                      if line.startswith(f"ctloop_records_{name}_total")), "nan"))
                    for name in ("written", "dropped")}
                found["records"]["bytes"] = sum(
                    p.stat().st_size for p in record_dir.glob("requests-*.jsonl"))
        finally:
            process.terminate()
            process.wait(timeout=30)
    found["in_process"] = recorder_cost(rows)
    return found


def recorder_cost(rows: list[dict], calls: int = 20000) -> dict[str, float]:
    """The sink's own cost, in this process: what a request pays (the sampling draw, the id and
    the queue put) and what the writer thread spends per single-row record (JSON and write)."""
    import tempfile
    import uuid

    import numpy as np

    from ctloop.serving.recorder import Recorder

    row = rows[0]
    columns = {name: (np.array([value], dtype=np.float32) if isinstance(value, (int, float))
                      else np.array([value or ""], dtype=object)) for name, value in row.items()}
    answers = np.array([0.5], dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        recorder = Recorder(folder, max_queue=calls + 1)
        started = time.perf_counter()
        for _ in range(calls):
            if recorder.sampled():
                recorder.record(uuid.uuid4().hex, "1", 1.0, columns, answers)
        hot_us = (time.perf_counter() - started) / calls * 1e6
        recorder.close(timeout_s=120)
        written = recorder.written
    items = [(time.time(), uuid.uuid4().hex, "1", 1.0, columns, answers)] * 1000
    with tempfile.TemporaryDirectory() as folder:
        recorder = Recorder(folder)
        started = time.perf_counter()
        recorder._write(items)
        writer_us = (time.perf_counter() - started) / len(items) * 1e6
        recorder.close()
    return {"request_us": hot_us, "writer_us_per_record": writer_us, "written": written}


def recording_table(recording: dict[str, Any]) -> str:
    """The request sink's cost: single-row latency without and with recording."""
    lines = ["request recording (single rows, every request recorded): latency off -> on",
             "| clients | p50 ms | p99 ms | req/s |", "|---|---|---|---|"]
    for count in RECORDING_CLIENTS:
        off, on = recording["off"][count], recording["on"][count]
        lines.append(f"| {count} | {off['p50_ms']:.2f} -> {on['p50_ms']:.2f} | "
                     f"{off['p99_ms']:.2f} -> {on['p99_ms']:.2f} | "
                     f"{off['requests_per_s']:.0f} -> {on['requests_per_s']:.0f} |")
    records = recording.get("records", {})
    lines.append(f"records written {records.get('written', 0):.0f}, dropped "
                 f"{records.get('dropped', 0):.0f}, {records.get('bytes', 0) / 1e6:.2f} MB")
    if "in_process" in recording:
        cost = recording["in_process"]
        lines.append(f"in-process: a request pays {cost['request_us']:.1f} us (draw, id, queue "
                     f"put); the writer thread {cost['writer_us_per_record']:.1f} us per "
                     "single-row record")
    return "\n".join(lines)


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
