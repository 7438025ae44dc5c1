"""The probe of one version over HTTP, and the canary verdict on what it saw.

``probe`` sends single-row V1 predict requests to the address of one version alone
(``status.probe_url``); ``canary_verdict`` judges them with the same rule as the local canary
(``ctloop.serving.canary.verdict``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from typing import Any

from ctloop.errors import ConfigError, CtloopError
from ctloop.kserve.status import one_line
from ctloop.serving import client
from ctloop.serving.canary import CanarySLO, ProbeStats, verdict


def probe(url: str, model_name: str, rows: list[dict[str, Any]], version: str, *,
          n_requests: int | None = None, window_s: float | None = None, concurrency: int = 2,
          timeout_s: float = 10.0) -> ProbeStats:
    """Sends single-row V1 predict requests to ``url``; counts answers and errors.

    Exactly one of ``n_requests`` (that many requests) or ``window_s`` (requests for that long)
    sets how much to send. ``url`` reaches one version alone (``probe_url``), so every answer
    is counted as ``version``'s unless it names another (``model_version``).

    Args:
        url: The server's base URL.
        model_name: The model's name in request paths.
        rows: Request rows (feature -> value), sent one per request, round robin.
        version: The version ``url`` serves.
        n_requests: How many requests to send.
        window_s: Or: send for this many seconds.
        concurrency: Clients sending at once.
        timeout_s: Per request; a slower answer is an error.
    """
    if (n_requests is None) == (window_s is None):
        raise ConfigError("probe needs exactly one of n_requests or window_s")
    if not rows:
        raise ConfigError("probe has no rows to send: pass eval rows with the model's features")
    stats, lock = ProbeStats(), threading.Lock()
    end = time.monotonic() + (window_s or 0.0)

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            answer = client.predict_raw(url, model_name, [rows[i % len(rows)]], timeout_s)
            if not isinstance(answer, dict) or len(answer.get("predictions") or []) != 1:
                raise ValueError(f"answer without one prediction: {one_line(answer, 120)}")
        # An unreachable server, a 4xx/5xx, a read timeout (OSError) or a malformed answer
        # (ValueError) all count against the version probed.
        except (CtloopError, OSError, ValueError) as exc:
            with lock:
                stats.errors += 1
                if len(stats.error_samples) < 3:
                    stats.error_samples.append(one_line(exc, 160))
            return
        with lock:
            stats.add(answer.get("model_version") or version,
                      (time.perf_counter() - started) * 1000)

    def worker(first: int) -> None:
        i = first
        while time.monotonic() < end:
            one(i)
            i += concurrency

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        if n_requests is not None:
            list(pool.map(one, range(n_requests)))
        else:
            list(pool.map(worker, range(concurrency)))
    return stats


def summary(url: str, stats: ProbeStats, version: str) -> dict[str, Any]:
    """What the probe of ``version`` at ``url`` saw, for a rollout's outcome."""
    answered = len(stats.answered.get(version, []))
    return {"url": url, "answered": answered, "errors": stats.errors,
            "p99_ms": round(stats.p99(version), 1) if answered else None}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Promote or roll back, and why."""

    promote: bool
    reason: str


def canary_verdict(probe: ProbeStats, slo: CanarySLO, version: str) -> Verdict:
    """Promote only if ``version`` answered at least ``slo.min_canary_requests`` requests, the
    error rate over all requests is <= ``slo.max_error_rate`` and its p99 <= ``slo.max_p99_ms``.

    Too little evidence rolls back (fail safe). The same rule as the local canary
    (``canary.verdict``), so one SLO means the same on both targets.
    """
    promote, reason = verdict(probe, version, slo)
    return Verdict(promote, reason)
