"""What the commands share: the settings file option, --help in sections, the serving
environment's python, KEY=VALUE flags, the terminal for progress views."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from pathlib import Path

import click

from ctloop.errors import CtloopError

# How a ctloop command's process is started: its console script, ``python -m ctloop.cli``, or
# (a model server started ahead) ``python -m ctloop.serving.ahead``.
COMMAND, COMMAND_MODULES = "ctloop", ("ctloop.cli.__main__", "ctloop.serving.ahead")

SERVING_PYTHON_ENV = "CTLOOP_SERVING_PYTHON"
# ctx.meta key: settings of the config file that no flag of `run` carries (passed on as they are).
_CONFIG_ONLY = "ctloop.config_only"

# `ctloop run --help` in sections; an option not listed here is under "Other".
_SECTIONS = {
    "Data": ("config_path", "data_uri", "spans", "s3_endpoint_url", "label", "task", "exclude",
             "positive_label", "schema_uri"),
    "Model": ("model_name", "epochs", "batch_size", "learning_rate", "hidden_units", "seed",
              "early_stopping_patience", "user_module", "warm_start"),
    "Gates": ("drift_threshold", "skew_threshold", "false_alarm_rate", "anomaly_policy",
              "stats_sample_rate", "slice_features", "min_auc", "max_auc_decrease",
              "min_accuracy", "max_accuracy_decrease", "max_mae", "max_mae_increase",
              "cold_start", "force_bless_reason", "baseline_stage", "beam_pipeline_args"),
    "Serving": ("serving_python", "max_p99_ms", "min_rps", "serving_url", "canary_percent",
                "release_stage", "release_strategy", "registry_uri"),
    "Output": ("workdir", "summary_path", "log_path", "verbose", "runner"),
}


class _GroupedCommand(click.Command):
    """A command whose --help lists its options in sections (``_SECTIONS``)."""

    def format_options(self, ctx, formatter):
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        placed = set()
        for title, names in _SECTIONS.items():
            rows = [records[n] for n in names if records.get(n)]
            placed.update(names)
            if rows:
                with formatter.section(f"{title} options"):
                    formatter.write_dl(rows)
        rest = [r for n, r in records.items() if r and n not in placed]
        if rest:
            with formatter.section("Other options"):
                formatter.write_dl(rest)


def _read_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Reads -c FILE before any other option: its values become the options' defaults (so flags
    override them), and the settings no flag carries are kept for the run as they are."""
    if value is None:
        return
    from ctloop import config

    try:
        values = config.load(value)
    except CtloopError as exc:
        raise click.ClickException(str(exc)) from exc
    flags = {p.name for p in ctx.command.params}
    defaults, only = {}, {}
    for key, item in values.items():
        if key == "anomaly_policy":
            item = [f"{k}={v}" for k, v in item.items()]
        # A threshold turned off (-1.0) has no flag value: the flag's None means its default.
        if key in flags and not (key in config.THRESHOLDS and item == config.NO_THRESHOLD):
            defaults[key] = item
        else:
            only[key] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta[_CONFIG_ONLY] = only


def project_serving_python() -> Path:
    """The serving environment `make setup` builds beside this package's source tree."""
    import ctloop

    return Path(ctloop.__file__).resolve().parent.parent / ".venv" / "serving" / "bin" / "python"


def find_serving_python(ctx: click.Context, given: str | None) -> str:
    """The serving environment's python: --serving-python, else $CTLOOP_SERVING_PYTHON, else the
    config file's serving_python, else the project's own; one line saying how to get one."""
    if given:
        source = ctx.get_parameter_source("serving_python")
        named = f"{SERVING_PYTHON_ENV}={given}" if (
            source == click.core.ParameterSource.ENVIRONMENT) else f"--serving-python {given}"
        if not Path(given).is_file():
            raise click.UsageError(f"{named} does not exist; pass the python of the serving "
                                   "environment, or create the project's with `make setup`")
        return given
    own = project_serving_python()
    if not own.is_file():
        raise click.UsageError(f"no serving environment: {own} does not exist; create it with "
                               f"`make setup`, or pass --serving-python (or {SERVING_PYTHON_ENV})")
    return str(own)


def _pairs(values: tuple[str, ...], flag: str, example: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise click.UsageError(f"{flag} {value!r} is not KEY=VALUE, e.g. {example}")
        pairs[key] = item
    return pairs


def _terminal(stack: contextlib.ExitStack):
    """This process's standard output as it is now, for the progress view: a copy of its file
    descriptor, which keeps pointing at the terminal while the tasks' output goes to the log;
    the stream itself when it has no descriptor (a test's capture)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stdout
    sys.stdout.flush()
    return stack.enter_context(open(os.dup(fd), "w", buffering=1,
                                    encoding=sys.stdout.encoding or "utf-8", errors="replace"))


def end_command() -> None:
    """Ends the ``ctloop`` command's process with status 0 now that its work and output are done,
    skipping the interpreter's teardown of TensorFlow and the libraries around it (``ctloop run``
    1 to 2 s, a model server 1 s: finalizing thousands of modules, then TensorFlow's C++
    destructors).

    The exit hooks still run first (temporary folders are removed, logs flushed). Anywhere but the
    command's own process (a test invoking the command, a notebook) this returns and does nothing.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if Path(sys.argv[0]).name == COMMAND or getattr(spec, "name", None) in COMMAND_MODULES:
        end_process()


def end_process() -> None:
    """Exits with status 0 at once, after the exit hooks (``end_command``'s ending)."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()  # noqa: SLF001 - what the interpreter's exit runs first, and only
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
