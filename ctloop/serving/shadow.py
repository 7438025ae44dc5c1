"""The shadow: a candidate version that sees the serving version's requests but answers no client.

For each request the serving model answered, the same checked rows are queued (references to
arrays the server built anyway: one ``put_nowait``); a background thread runs them through the
shadow model and compares its answers with the served ones. The queue is bounded: when the
shadow falls behind, a request is dropped and counted, never waited for, so the shadow cannot
slow a client's request, fail it, or hold memory without bound. Clients only ever see the
serving model's answer and version.

The comparison rule (``agree``), row by row, by the model's task (``ctloop.contract``):

- binary: the same side of 0.5 (the predicted label);
- multiclass: the same most probable class;
- regression: ``|shadow - served| <= max(tolerance, relative_tolerance * |served|)``: an absolute
  floor for answers near zero, a share of the answer's own scale above it.

A shadow answer that is not finite (NaN, inf) disagrees whatever the served one is. A request
agrees when every row does; ``compared``/``agreed`` count requests, ``rows_compared`` and
``rows_agreed`` rows.

Standard library and numpy only: the server imports it, and so do tests.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ctloop.contract import BINARY, MULTICLASS
from ctloop.serving import client
from ctloop.serving.defaults import DEFAULT_SHADOW_QUEUE

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-3  # regression: absolute floor of the agreement band
DEFAULT_RELATIVE_TOLERANCE = 0.05  # regression: 5% of the served answer's magnitude
# Latencies kept for the percentiles: the most recent ones, a bounded window.
LATENCY_WINDOW = 10_000
# One comparison in this many is logged (shadow answer beside the served one); every
# disagreement up to LOGGED_DISAGREEMENTS per shadow version is logged too.
LOG_EVERY = 1000
LOGGED_DISAGREEMENTS = 5


def agree(task: str, served: np.ndarray, shadow: np.ndarray, tolerance: float = DEFAULT_TOLERANCE,
          relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE) -> np.ndarray:
    """Per row: whether the shadow's answer agrees with the served one (the module's rule)."""
    served, shadow = np.asarray(served, dtype=np.float64), np.asarray(shadow, dtype=np.float64)
    if shadow.shape != served.shape:
        return np.zeros(len(served), dtype=bool)
    finite = np.isfinite(shadow).reshape(len(shadow), -1).all(axis=1)
    if task == BINARY:
        same = (served >= 0.5) == (shadow >= 0.5)
    elif task == MULTICLASS:
        same = served.argmax(axis=1) == shadow.argmax(axis=1)
    else:
        same = np.abs(shadow - served) <= np.maximum(tolerance, relative_tolerance * np.abs(served))
    return same & finite


class ShadowStats:
    """The counters of one shadow version (reset when another shadow starts)."""

    def __init__(self, version: str | None):
        self.version = version
        self.compared = 0  # requests run through the shadow and compared
        self.agreed = 0  # ... of which every row agreed
        self.rows_compared = 0
        self.rows_agreed = 0
        self.errors = 0  # requests the shadow failed to answer (an exception)
        self.dropped = 0  # requests not run: the queue was full
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.last_error: str | None = None
        self.warm = False  # the shadow has answered once (its first, cold, answer is not timed)

    def as_dict(self) -> dict[str, Any]:
        latencies = list(self.latencies_ms)
        return {
            "version": self.version,
            "compared": self.compared,
            "agreed": self.agreed,
            "agreement": round(self.agreed / self.compared, 6) if self.compared else None,
            "rows_compared": self.rows_compared,
            "rows_agreed": self.rows_agreed,
            "errors": self.errors,
            "dropped": self.dropped,
            "latency_samples": len(latencies),
            "p50_ms": _percentile(latencies, 50),
            "p99_ms": _percentile(latencies, 99),
            "last_error": self.last_error,
        }


class ShadowRunner:
    """Runs queued requests through the shadow model on a background thread and counts.

    Args:
        score: ``score(loaded, columns) -> answers`` (``ctloop.serving.model.score``).
        max_queue: The most requests waiting; more are dropped and counted.
        tolerance: Regression: the absolute floor of the agreement band.
        relative_tolerance: Regression: the band's share of the served answer's magnitude.
    """

    def __init__(self, score: Callable[[Any, dict[str, np.ndarray]], np.ndarray],
                 max_queue: int = DEFAULT_SHADOW_QUEUE, tolerance: float = DEFAULT_TOLERANCE,
                 relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE):
        self._score = score
        self.tolerance, self.relative_tolerance = tolerance, relative_tolerance
        self.max_queue = max_queue
        self._queue: queue.Queue = queue.Queue(max_queue)
        self.stats = ShadowStats(None)
        self._logged_disagreements = 0
        self._thread = threading.Thread(target=self._drain, name="shadow", daemon=True)
        self._thread.start()

    def reset(self, version: str | None) -> None:
        """Counts afresh for shadow ``version`` (None: no shadow)."""
        self.stats = ShadowStats(version)
        self._logged_disagreements = 0

    def submit(self, shadow: Any, columns: dict[str, np.ndarray], served: np.ndarray,
               served_version: str | None) -> bool:
        """Queues one answered request for the shadow (never blocks); False if dropped."""
        stats = self.stats
        try:
            self._queue.put_nowait((stats, shadow, columns, served, served_version))
        except queue.Full:
            stats.dropped += 1
            return False
        return True

    def join(self) -> None:
        """Waits until everything queued has been compared (tests)."""
        self._queue.join()

    def _drain(self) -> None:
        while True:
            stats, shadow, columns, served, served_version = self._queue.get()
            try:
                self._compare(stats, shadow, columns, served, served_version)
            finally:
                self._queue.task_done()

    def _compare(self, stats: ShadowStats, shadow: Any, columns: dict[str, np.ndarray],
                 served: np.ndarray, served_version: str | None) -> None:
        started = time.perf_counter()
        try:
            answers = self._score(shadow, columns)
        except Exception as exc:  # noqa: BLE001 - a failing shadow is counted, never raised
            stats.errors += 1
            lines = str(exc).strip().splitlines()
            stats.last_error = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
            if stats.errors == 1:
                logger.error("shadow version %s failed a request: %s", shadow.version,
                             stats.last_error)
            return
        if stats.warm:
            stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        stats.warm = True  # a fresh model's first call traces its graph: not its latency
        rows = agree(shadow.task, served, answers, self.tolerance, self.relative_tolerance)
        stats.compared += 1
        stats.rows_compared += len(rows)
        stats.rows_agreed += int(rows.sum())
        if rows.all():
            stats.agreed += 1
        elif self._logged_disagreements < LOGGED_DISAGREEMENTS:
            self._logged_disagreements += 1
            logger.info("shadow version %s disagrees with serving version %s: served %s, "
                        "shadow %s", shadow.version, served_version, _short(served),
                        _short(answers))
        if stats.compared % LOG_EVERY == 1:
            logger.info("shadow version %s: served %s, shadow %s (%d compared, %d agreed)",
                        shadow.version, _short(served), _short(answers), stats.compared,
                        stats.agreed)


def _percentile(values: list[float], q: float) -> float | None:
    return round(client.percentile(values, q), 3) if values else None


def _short(answers: np.ndarray, keep: int = 3) -> str:
    values = np.asarray(answers).tolist()
    shown = values[:keep]
    return f"{shown}{'...' if len(values) > keep else ''}"
