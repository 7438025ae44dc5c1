"""The canary phase against a running local server that follows the registry.

The server routes a share of requests to the canary version and labels every answer with the
version that gave it, so the probe measures the canary's own errors and latency, not a blend.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import threading
import time
from typing import Any

from ctloop.errors import CtloopError
from ctloop.serving import client
from ctloop.settings import CanarySLO


@dataclasses.dataclass
class ProbeStats:
    """What the probe saw, per model version (errors are counted where no version is known)."""

    answered: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # ms
    errors: int = 0
    error_samples: list[str] = dataclasses.field(default_factory=list)

    def add(self, version: str | None, latency_ms: float) -> None:
        self.answered.setdefault(str(version), []).append(latency_ms)

    def p99(self, version: str) -> float:
        latencies = self.answered.get(version)
        return client.percentile(latencies, 99) if latencies else math.inf


def rows(eval_path: str, model_dir: str, limit: int = 200) -> list[dict[str, Any]]:
    """Eval rows as requests: the model's features only, missing values as null."""
    import json

    import pandas as pd

    from ctloop.contract import read_features

    features = list(read_features(model_dir))
    frame = pd.read_parquet(eval_path, columns=features).head(limit)
    return json.loads(frame.to_json(orient="records"))


def probe(url: str, model_name: str, rows: list[dict[str, Any]], canary_version: str,
          slo: CanarySLO) -> ProbeStats:
    """Waits until the canary answers (or the deadline), then sends ``slo.requests`` requests."""
    stats, lock = ProbeStats(), threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            answer = client.predict_raw(url, model_name, [rows[i % len(rows)]])
            with lock:
                stats.add(answer.get("model_version"), (time.perf_counter() - started) * 1000)
        except CtloopError as exc:
            with lock:
                stats.errors += 1
                if len(stats.error_samples) < 3:
                    stats.error_samples.append(str(exc))

    deadline = time.monotonic() + slo.deadline_s
    i = 0
    while canary_version not in stats.answered and time.monotonic() < deadline:
        one(i)  # the server picks the canary up on its next poll of the registry
        i += 1
    if canary_version not in stats.answered:
        return stats
    stats.answered.pop(canary_version)  # measure from here on, not the first (cold) answer
    with concurrent.futures.ThreadPoolExecutor(slo.concurrency) as pool:
        list(pool.map(one, range(i, i + slo.requests)))
    return stats


def verdict(stats: ProbeStats, canary_version: str, slo: CanarySLO) -> tuple[bool, str]:
    """Promote or roll back, and why. Too little evidence rolls back (fail safe)."""
    served = len(stats.answered.get(canary_version, []))
    total = sum(len(v) for v in stats.answered.values()) + stats.errors
    if served < slo.min_canary_requests:
        return False, (f"canary answered {served} of {total} requests, fewer than the "
                       f"{slo.min_canary_requests} needed to judge it")
    error_rate = stats.errors / total
    if error_rate > slo.max_error_rate:
        return False, (f"error rate {error_rate:.1%} above {slo.max_error_rate:.1%} "
                       f"({'; '.join(stats.error_samples)})")
    p99 = stats.p99(canary_version)
    if p99 > slo.max_p99_ms:
        return False, f"canary p99 {p99:.1f} ms above {slo.max_p99_ms:g} ms"
    return True, (f"canary answered {served} of {total} requests, error rate {error_rate:.1%} "
                  f"<= {slo.max_error_rate:.1%}, p99 {p99:.1f} ms <= {slo.max_p99_ms:g} ms")
