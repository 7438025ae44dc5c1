"""Infra validation: the candidate must serve, in the real serving runtime, before it may deploy.

Starts the candidate in the real serving runtime (locally a KServe model server process of the
serving environment; on a cluster a short-lived InferenceService), waits until it is ready (with
a deadline), sends real eval rows and checks the served predictions equal the
in-process SavedModel's, then measures latency and throughput under concurrent clients against
an SLO. Any failure (the server does not start, answers an error, disagrees with the model, or is
too slow) means "not infra-blessed": the model that serves now keeps serving.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import gc
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ctloop.contract import FeatureSpec, to_inputs
from ctloop.errors import CtloopError, ModelError
from ctloop.serving import client
from ctloop.serving import process as server_process
from ctloop.settings import SLO

if TYPE_CHECKING:
    from kubernetes.dynamic import DynamicClient

    from ctloop.kserve import ServiceConfig

BATCH_ROWS = 64


@dataclasses.dataclass(frozen=True)
class InfraResult:
    blessed: bool
    reason: str
    checks: list[tuple[str, str, str, bool]]  # (check, measured, required, passed)
    metrics: dict[str, float]
    where: str = ""  # what served the candidate


def in_process_predictions(model_dir: str, frame: pd.DataFrame, features: list[FeatureSpec]
                           ) -> list:
    """The model's answers for ``frame``, computed here: its task's output (``contract``)."""
    import tensorflow as tf

    from ctloop import contract

    task = contract.read_task(model_dir)[0]
    try:
        signatures = tf.saved_model.load(model_dir).signatures
        if contract.SERVING_SIGNATURE not in signatures:
            raise ModelError(
                f"model {model_dir} has no {contract.SERVING_SIGNATURE!r} signature (it has "
                f"{sorted(signatures) or 'none'}); export it with ctloop's trainer")
        signature = signatures[contract.SERVING_SIGNATURE]
        inputs = {k: tf.constant(v) for k, v in to_inputs(frame, features).items()}
        return signature(**inputs)[contract.OUTPUT_KEYS[task]].numpy().tolist()
    except (tf.errors.OpError, TypeError, ValueError, KeyError, OSError) as exc:
        raise ModelError(
            f"model {model_dir} cannot predict in-process ({str(exc).splitlines()[0][:200]}); "
            "re-export it with ctloop's trainer"
        ) from exc


def first_rows(eval_path: str, rows: int) -> pd.DataFrame:
    """The first ``rows`` rows of a split (a Parquet file, or ingest's folder of part files, in
    order), reading no more row groups than they need."""
    import pyarrow.dataset as ds

    return ds.dataset(eval_path, format="parquet").head(rows).to_pandas()


def _in_process(model_dir: str, frame: pd.DataFrame) -> tuple[list[FeatureSpec], list]:
    from ctloop import contract

    features = [FeatureSpec(n, d) for n, d in contract.read_features(model_dir).items()]
    return features, in_process_predictions(model_dir, frame, features)


def compare(served: list, expected: list) -> tuple[float, float]:
    """The largest ``|served - expected|`` over all values, absolute and relative to
    ``max(1, |expected|)``: probabilities compare absolutely, large regression values relative to
    their size. Infinite when an answer is missing (a NaN reaches JSON as null), not a number,
    or of another shape."""
    try:
        got = np.asarray(served, dtype=np.float64)
    except (TypeError, ValueError):
        return math.inf, math.inf
    want = np.asarray(expected, dtype=np.float64)
    if got.shape != want.shape:
        return math.inf, math.inf
    diff = np.abs(got - want)
    diff[~np.isfinite(diff)] = math.inf
    return (float(diff.max(initial=0.0)),
            float((diff / np.maximum(1.0, np.abs(want))).max(initial=0.0)))


def load_test(url: str, model_name: str, rows: list[dict], slo: SLO) -> dict[str, float]:
    """``slo.requests`` single-row requests from ``slo.concurrency`` clients at once."""

    def one(i: int) -> float:
        started = time.perf_counter()
        client.predict(url, model_name, [rows[i % len(rows)]])
        return (time.perf_counter() - started) * 1000

    # The clients time the server, not this process: a full collection of a large heap (the
    # in-process runner's, TensorFlow, TFDV and TFMA loaded, each earlier task's garbage) stops
    # every client thread at once: its requests in flight (one per client) set the p99 (347 ms
    # against 9 ms on a real data set's run). So no collection runs during the timed requests.
    gc.disable()
    try:
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(slo.concurrency) as pool:
            latencies = list(pool.map(one, range(slo.requests)))
        wall = time.perf_counter() - started
    finally:
        gc.enable()
    return {
        "p50_ms": client.percentile(latencies, 50),
        "p99_ms": client.percentile(latencies, 99),
        "rps": len(latencies) / wall,
    }


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A server answering for the candidate: its base URL, the model name in its request paths,
    and how long it took to become ready."""

    url: str
    model_name: str
    startup_s: float
    where: str


# Starts the candidate somewhere and yields its endpoint once ready; stops it on exit.
Serve = Callable[[], contextlib.AbstractContextManager[Endpoint]]


def local_server(model_dir: str, model_name: str, serving_python: str, startup_timeout_s: float,
                 server_log: str | None = None) -> Serve:
    """The candidate in a KServe model server process of the serving environment."""

    @contextlib.contextmanager
    def serve() -> Iterator[Endpoint]:
        with server_process.serve(serving_python, model_name, model_dir=model_dir,
                                  log_path=server_log) as server:
            startup = server.wait_ready(model_name, startup_timeout_s)
            ahead = (f", started {server.ahead_s:.1f} s ahead of the model (its imports meanwhile)"
                     if server.ahead_s else "")
            yield Endpoint(server.url, model_name, startup,
                           f"the KServe model server of the serving environment{ahead}")

    return serve


def kserve_candidate(api: DynamicClient, config: ServiceConfig, artifact_uri: str,
                     startup_timeout_s: float, token: str, poll_s: float = 5.0) -> Serve:
    """The candidate as a short-lived InferenceService beside the serving one, named for this
    run (``token``), deleted after (``kserve.candidate``).

    Its address is the in-cluster one KServe reports, so this runs in the cluster (a KFP pod).
    """
    from ctloop import kserve

    kserve.candidate_service(config, artifact_uri, token)  # bad names or URIs fail here

    @contextlib.contextmanager
    def serve() -> Iterator[Endpoint]:
        with kserve.candidate(api, config, artifact_uri, token, startup_timeout_s,
                              poll_s) as ready:
            yield Endpoint(ready.url, ready.name, ready.startup_s,
                           f"a short-lived InferenceService {ready.namespace}/{ready.name}")

    return serve


def run(model_dir: str, eval_path: str, slo: SLO, serve: Serve) -> InfraResult:
    """Serves the candidate (``serve``), checks its answers and its speed; decides the infra
    blessing.

    The in-process answers (TensorFlow's import, the model's load, its predictions) are computed
    in a thread while the server starts, so the two waits overlap.
    """
    frame = first_rows(eval_path, slo.rows)
    checks, metrics, where = [], {}, ""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_in_process, model_dir, frame)
        try:
            with serve() as endpoint:
                features, expected = pending.result()
                # A feature absent from the data is sent as missing, as train and the in-process
                # answers take it (data validation's gate reports the column).
                rows = json.loads(frame.reindex(columns=[f.name for f in features])
                                  .to_json(orient="records"))
                where = endpoint.where
                metrics["startup_s"] = endpoint.startup_s
                checks.append(("server ready", f"{metrics['startup_s']:.1f} s",
                               f"<= {slo.startup_timeout_s:g} s", True))
                served = [p for start in range(0, len(rows), BATCH_ROWS)
                          for p in client.predict(endpoint.url, endpoint.model_name,
                                                  rows[start:start + BATCH_ROWS])]
                metrics["max_abs_diff"], relative = compare(served, expected)
                checks.append(("served = in-process predictions",
                               f"max |diff| {metrics['max_abs_diff']:.2e} over {len(rows)} rows",
                               f"<= {slo.tolerance:g} x max(1, |value|)",
                               relative <= slo.tolerance))
                metrics.update(load_test(endpoint.url, endpoint.model_name, rows, slo))
        except CtloopError as exc:
            if pending.exception() is not None:  # the model itself does not answer: say that
                problem = str(pending.exception())
                checks = [("model answers in-process", problem, "predictions for the eval rows",
                           False)]
                return InfraResult(False, f"model answers in-process: {problem}", checks, {})
            checks.append(("server answers", str(exc), "ready and answering", False))
    if "p99_ms" in metrics:
        checks += [
            (f"p99 latency, {slo.concurrency} clients", f"{metrics['p99_ms']:.1f} ms",
             f"<= {slo.max_p99_ms:g} ms", metrics["p99_ms"] <= slo.max_p99_ms),
            (f"throughput, {slo.concurrency} clients", f"{metrics['rps']:.1f} req/s",
             f">= {slo.min_rps:g} req/s", metrics["rps"] >= slo.min_rps),
        ]
    failed = [f"{name}: {measured} (needs {required})" for name, measured, required, ok in checks
              if not ok]
    blessed = not failed
    reason = ("served, answered like the model, within the SLO" if blessed
              else "; ".join(failed))
    return InfraResult(blessed, reason, checks, metrics, where)


def report_markdown(result: InfraResult, model_name: str) -> str:
    verdict = "INFRA-BLESSED" if result.blessed else "NOT INFRA-BLESSED"
    lines = [f"# Infra validation: {model_name}", "", f"**{verdict}**: {result.reason}", "",
             f"The candidate ran in {result.where or 'no server (it never started)'}.", "",
             "| check | measured | required | result |", "|---|---|---|---|"]
    lines += [f"| {name} | {measured} | {required} | {'pass' if ok else '**fail**'} |"
              for name, measured, required, ok in result.checks]
    if "p50_ms" in result.metrics:
        lines += ["", f"p50 latency {result.metrics['p50_ms']:.1f} ms."]
    return "\n".join(lines) + "\n"

