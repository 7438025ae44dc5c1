"""Tune: an Optuna search over the trainer's (and a user module's) hyperparameters, measured on a
validation split carved out of the train split, before the final training.

Trial 0 is the configured hyperparameters, so whether the search beat them is measured. The
sampler is TPE, seeded with the run's seed. Locally the search asks ``workers`` trials at a time,
runs them at once in worker processes and tells their values before asking again, so a rerun
with the same parallelism records the same trials. On a cluster tune_plan proposes every trial at
once (``ctloop.tuning.plan``) for a fan-out of tune_trial tasks, and ``pick`` summarizes their
results.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import time
from typing import Any

from ctloop import contract, tuning
from ctloop.errors import ConfigError
from ctloop.settings import JUDGED, Hyperparameters
from ctloop.training import JUDGED_METRIC

HISTORY_FILE = "trials.csv"


@dataclasses.dataclass(frozen=True)
class Search:
    """What a search found: every trial, the chosen one and why the search stopped."""

    metric: str
    higher_is_better: bool
    trials: list[dict[str, Any]]  # number, params, value, epochs_run, seconds, defaults
    chosen: dict[str, Any]  # the best trial; the configured one (trial 0) on a tie
    hyperparameters: dict[str, Any]  # what the final training uses: every tunable + user
    stopped: str  # why no further trial ran
    seconds: float
    workers: int
    rows: dict[str, int]

    @property
    def defaults(self) -> dict[str, Any] | None:
        return next((t for t in self.trials if t["defaults"]), None)

    @property
    def improved(self) -> bool:
        return not self.chosen["defaults"]

    def verdict(self) -> str:
        """One line: what the search found against the configured hyperparameters."""
        defaults, chosen = self.defaults, self.chosen
        if defaults is None:
            return f"trial {chosen['number']} best: {self.metric} {chosen['value']:.4f}"
        if not self.improved:
            return (f"nothing better than the configured hyperparameters: {self.metric} "
                    f"{defaults['value']:.4f} (trial 0) is the best of {len(self.trials)}")
        return (f"trial {chosen['number']} beats the configured hyperparameters: {self.metric} "
                f"{chosen['value']:.4f} vs {defaults['value']:.4f} (trial 0)")


def workers_for(parallelism: int, trials: int) -> int:
    """Trials at once: ``parallelism`` (0: one per core), at most the cores this process may
    use and the trials."""
    cores = len(os.sched_getaffinity(0))
    return max(1, min(parallelism or cores, cores, trials))


_WORKER: tuning.Trials | None = None


def _start_worker(threads: int, arguments: dict[str, Any]) -> None:
    """A worker process: TensorFlow limited to its share of the cores, the data loaded once."""
    import tensorflow as tf

    global _WORKER
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    _WORKER = tuning.Trials(**arguments)


def _run_in_worker(hp: Hyperparameters) -> dict[str, Any]:
    return _WORKER.run(hp)


def search(train_path: str, schema_path: str, label: str, exclude: list[str], task: str,
           label_classes: list[str] | None, base: Hyperparameters, space: dict[str, Any],
           trials: int, timeout_s: float, parallelism: int, validation_percent: int,
           user_module: str | None = None, s3_endpoint_url: str | None = None,
           log=print) -> Search:
    """Runs up to ``trials`` trials (trial 0 the configured ``base``), ``workers_for`` at once,
    starting none after ``timeout_s`` seconds; logs each trial as it ends."""
    started = time.monotonic()
    dims = tuning.dimensions(space, user_module)
    workers = workers_for(parallelism, trials)
    arguments = dict(train_path=train_path, schema_path=schema_path, label=label,
                     exclude=exclude, task=task, label_classes=label_classes,
                     validation_percent=validation_percent, user_module=user_module,
                     s3_endpoint_url=s3_endpoint_url)
    study = tuning.study(task, base.seed)
    tuning.enqueue_configured(study, dims, base)
    local = tuning.Trials(**arguments)  # the data checked (and its rows counted) up front
    log(f"tune: {trials} trials, {workers} at once, on {local.rows['fit']} fit / "
        f"{local.rows['validation']} validation rows of the train split; objective "
        f"{local.metric} ({study.direction.name.lower()}), budget {timeout_s:g} s")
    pool = None
    if workers > 1:
        # spawn, not fork: the parent may already run TensorFlow, which does not survive a fork.
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(threads, arguments))
    done: list[dict[str, Any]] = []
    stopped = f"all {trials} trials ran"
    try:
        while len(done) < trials:
            # The first batch always runs: it holds the configured trial, which the search
            # must measure to say anything.
            if done and time.monotonic() - started >= timeout_s:
                stopped = (f"time budget: {timeout_s:g} s spent after {len(done)} of {trials} "
                           "trials")
                break
            batch = [tuning.ask(study, dims) for _ in range(min(workers, trials - len(done)))]
            hps = [tuning.hyperparameters(base, params) for _, params, _ in batch]
            results = (list(pool.map(_run_in_worker, hps)) if pool
                       else [local.run(hp) for hp in hps])
            for (trial, params, defaults), result in zip(batch, results, strict=True):
                study.tell(trial, result["value"])
                done.append({"number": trial.number, "params": params, "defaults": defaults,
                             **result})
                best = _best(done, study.direction.name == "MAXIMIZE")
                log(f"tune: trial {trial.number + 1}/{trials} {_shown(params)}"
                    f"{' (configured)' if defaults else ''} -> {local.metric} "
                    f"{result['value']:.4f} in {result['seconds']:.1f} s, "
                    f"{result['epochs_run']} epochs; best {best['value']:.4f} "
                    f"(trial {best['number']})")
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return summarize(done, task, base, stopped, time.monotonic() - started, workers,
                     local.rows)


def pick(results: list[dict[str, Any]], space: dict[str, Any], task: str, base: Hyperparameters,
         trials: int, seconds: float, workers: int, user_module: str | None = None) -> Search:
    """The search's summary from a fan-out's trial results (those a time budget skipped have no
    value)."""
    dims = tuning.dimensions(space, user_module)
    ran = sorted(({**r, "number": int(r["number"]), "params": tuning.typed(dims, r["params"])}
                  for r in results if r.get("value") is not None), key=lambda r: r["number"])
    if not ran:
        raise ConfigError(f"tune: none of the {trials} trials ran within the time budget; raise "
                          "tune_timeout_s")
    stopped = (f"all {trials} trials ran" if len(ran) == trials else
               f"time budget: {trials - len(ran)} of {trials} trials started too late")
    rows = ran[0].get("rows", {})
    return summarize(ran, task, base, stopped, seconds, workers,
                     {k: int(v) for k, v in rows.items()})


def _best(done: list[dict[str, Any]], higher: bool) -> dict[str, Any]:
    # Ties go to the earliest trial: the configured hyperparameters unless beaten.
    return min(done, key=lambda t: (-t["value"] if higher else t["value"], t["number"]))


def summarize(done: list[dict[str, Any]], task: str, base: Hyperparameters, stopped: str,
              seconds: float, workers: int, rows: dict[str, int]) -> Search:
    judged = JUDGED[contract.task(task)]
    chosen = _best(done, judged.higher_is_better)
    hp = tuning.hyperparameters(base, chosen["params"])
    values = {name: list(getattr(hp, name)) if name == "hidden_units" else getattr(hp, name)
              for name in tuning.TUNABLE}
    return Search(JUDGED_METRIC[contract.task(task)], judged.higher_is_better, done, chosen,
                  {**values, "user": dict(hp.user)}, stopped, round(seconds, 2), workers, rows)


def _shown(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())
