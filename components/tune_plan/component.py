"""KFP component: a cluster search's trials, proposed at once for a fan-out of tune_trial tasks."""

from typing import Dict, List, NamedTuple, Optional

from kfp import dsl

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def tune_plan(
    task: str,
    trials: int,
    space: Dict[str, dict],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    hidden_units: List[int],
    seed: int,
    early_stopping_patience: int,
    user_module: Optional[str] = None,
) -> NamedTuple("Planned", [("trials", List[dict]), ("started", float)]):
    """Proposes a search's trials at once (trial 0 the configured hyperparameters, the others a
    TPE sampler's, seeded), for a ParallelFor of tune_trial tasks; when the search started.

    KFP has no loop whose next round depends on the last, so the sampler proposes without
    feedback: a rerun with the same inputs plans the same trials. No data is read.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``: the direction of the judged metric.
        trials: How many trials (at least 1).
        space: Hyperparameter -> ``{low, high[, log, step]}`` or ``{choices}``
            (``ctloop.tuning``).
        epochs: The configured epochs.
        batch_size: The configured batch size.
        learning_rate: The configured learning rate.
        hidden_units: The configured hidden layer sizes.
        seed: Seeds the sampler.
        early_stopping_patience: The configured patience.
        user_module: Set when the space names a user module's own keys.

    Returns:
        ``trials``: one ``{number, params, defaults}`` per trial; ``started``: epoch seconds.
    """
    import time
    from collections import namedtuple

    from ctloop import tuning
    from ctloop.settings import Hyperparameters

    base = Hyperparameters(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        # A KFP list parameter holds JSON numbers, which arrive as floats.
        hidden_units=tuple(int(units) for units in hidden_units) or Hyperparameters.hidden_units,
        seed=seed, early_stopping_patience=early_stopping_patience)
    planned = tuning.plan(space, base, task, trials, user_module or None)
    for trial in planned:
        print(f"tune_plan: trial {trial['number']}: {trial['params']}"
              + (" (configured)" if trial["defaults"] else ""))
    return namedtuple("Planned", ["trials", "started"])(planned, time.time())
