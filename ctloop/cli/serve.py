"""``ctloop serve`` and ``ctloop predict``: the KServe model server and a client of it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from ctloop.cli.common import end_command
from ctloop.errors import CtloopError, DataError
from ctloop.registry import PRODUCTION, STAGES
from ctloop.serving import defaults
from ctloop.serving.defaults import DEFAULT_MAX_BATCH, DEFAULT_POLL_S, DEFAULT_PORT
from ctloop.settings import MODEL_NAME


@click.command()
@click.option("--registry", "registry_uri",
              help="Registry: a folder or s3://BUCKET[/PREFIX]. Serve the model's serving "
              "version (of --stage) and follow it (a new version, a canary or a shadow is picked "
              "up without a restart), or serve --version.")
@click.option("--stage", type=click.Choice(STAGES), default=PRODUCTION, show_default=True,
              help="With --registry: the stage whose pointers this server follows (serving "
              "version, canary, shadow): one `ctloop serve` per stage.")
@click.option("--warm-seconds", type=click.FloatRange(min=0), default=defaults.DEFAULT_WARM_S,
              show_default=True, help="With --registry: after the serving pointer moves, keep "
              "the previous version loaded this long, so a rollback to it needs no reload.")
@click.option("--shadow-queue", type=click.IntRange(min=1),
              default=defaults.DEFAULT_SHADOW_QUEUE, show_default=True,
              help="With --registry: the most served requests waiting for the shadow model; "
              "more are dropped and counted, never waited for.")
@click.option("--shadow-tolerance", type=click.FloatRange(min=0), default=None,
              help="Regression: a shadow answer agrees within max(this, 5% of the served "
              "answer) [default: 0.001].")
@click.option("--s3-endpoint-url", help="S3-compatible endpoint of an s3:// --registry or "
              "--record-dir (MinIO, SeaweedFS) [default: boto3's own configuration].")
@click.option("--model-dir", type=click.Path(file_okay=False),
              help="Serve this model folder instead of a registry version.")
@click.option("--model-name", default=MODEL_NAME, show_default=True,
              help="The model's name, in the registry and in request paths.")
@click.option("--version", type=click.IntRange(min=1),
              help="With --registry: the registry version to serve [default: follow the serving "
              "one]. With --model-dir: the registry version the folder holds, which answers and "
              "records carry (a KServe predictor serves its version's model folder).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="HTTP port (V1, V2, health, /metrics).")
@click.option("--grpc-port", type=click.IntRange(1, 65535),
              help="Also serve V2 over gRPC on this port [default: off].")
@click.option("--max-batch", type=click.IntRange(min=1), default=DEFAULT_MAX_BATCH,
              show_default=True, help="Most rows per request; more is a 400.")
@click.option("--poll-interval", type=click.FloatRange(min=0.05), default=DEFAULT_POLL_S,
              show_default=True, help="Seconds between reads of a followed registry's pointers.")
@click.option("--request-log", is_flag=True,
              help="Log a line per request (access and latency); /metrics counts them anyway.")
@click.option("--record-dir",
              help="Record sampled requests here (inputs, answers, version, latency, request "
              "id) as JSON Lines, off the request path, for `ctloop monitor`: a folder, or "
              "s3://BUCKET/PREFIX (each rotated file uploaded with one PUT) [default: off].")
@click.option("--record-sample-rate", type=float, default=defaults.DEFAULT_RECORD_SAMPLE_RATE,
              show_default=True,
              help="The share of requests recorded, in (0, 1].")
@click.option("--record-rotate-rows", type=click.IntRange(min=1),
              default=defaults.DEFAULT_ROTATE_ROWS, show_default=True,
              help="Start a new record file after this many rows...")
@click.option("--record-rotate-minutes", type=float,
              default=defaults.DEFAULT_ROTATE_S / 60, show_default=True,
              help="...or after this many minutes.")
def serve(registry_uri, stage, warm_seconds, shadow_queue, shadow_tolerance, s3_endpoint_url,
          model_dir, model_name, version, port, grpc_port,
          max_batch, poll_interval, request_log, record_dir, record_sample_rate,
          record_rotate_rows, record_rotate_minutes) -> None:
    """Serve a model with the KServe model server (serving environment)."""
    if (registry_uri is None) == (model_dir is None):
        raise click.UsageError("pass exactly one of --registry or --model-dir")
    if s3_endpoint_url and not any((uri or "").startswith("s3://")
                                   for uri in (registry_uri, record_dir)):
        raise click.UsageError("--s3-endpoint-url is the endpoint of an s3:// --registry or "
                               "--record-dir; pass one, or leave the flag out")
    from ctloop.registry import open_registry
    from ctloop.serving import server
    from ctloop.serving.recorder import Recorder

    recorder = None
    if record_dir:
        recorder = Recorder(record_dir, record_sample_rate, rotate_rows=record_rotate_rows,
                            rotate_s=record_rotate_minutes * 60,
                            s3_endpoint_url=s3_endpoint_url if record_dir.startswith("s3://")
                            else None)
    if registry_uri and version is None:
        # Follows the registry: a new serving version or a canary is picked up while serving.
        from ctloop.serving.model import score
        from ctloop.serving.shadow import DEFAULT_TOLERANCE, ShadowRunner

        shadow = ShadowRunner(score, shadow_queue, DEFAULT_TOLERANCE if shadow_tolerance is None
                              else shadow_tolerance)
        model = server.RegistryModel(model_name, registry_uri, max_batch, poll_s=poll_interval,
                                     s3_endpoint_url=s3_endpoint_url, stage=stage,
                                     warm_s=warm_seconds, shadow=shadow)
    elif registry_uri:
        # Kept while serving: an S3 registry's downloaded files live as long as it does.
        registry = open_registry(registry_uri, model_name, s3_endpoint_url)
        found = server.registry_version(registry, version)
        model = server.CtloopModel(model_name, found.model_dir, max_batch, version=str(version))
    else:
        model = server.CtloopModel(model_name, Path(model_dir), max_batch,
                                   version=None if version is None else str(version))
    server.run_server(model, http_port=port, grpc_port=grpc_port, request_log=request_log,
                      recorder=recorder)
    end_command()  # stopped, and the recorder's files written: no second of TF's teardown


@click.command()
@click.option("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", show_default=True,
              help="The model server's base URL.")
@click.option("--model-name", default=MODEL_NAME, show_default=True)
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A CSV/Parquet file of rows to send.")
@click.option("--rows", default=5, show_default=True, help="How many rows to send.")
@click.option("--drop", multiple=True, help="A column not to send, e.g. the label (repeatable).")
@click.option("--requests", "repeat", default=50, show_default=True,
              help="Single-row requests to time for the latency figures.")
def predict(url, model_name, data_path, rows, drop, repeat) -> None:
    """Send rows to a running model server; print predictions and latency."""
    from ctloop.serving import client

    path = Path(data_path)
    instances = _read_rows(path, rows, list(drop))
    try:
        result = client.predict_rows(url, model_name, instances, repeat)
    except CtloopError as exc:
        about_file = _columns_error(path, exc)
        if about_file is None:
            raise
        raise about_file from exc
    click.echo(client.describe(result))


_FILE_FIX = "pass a CSV file with a header row and rows of values, or a Parquet file (.parquet)"


def _read_rows(path: Path, rows: int, drop: list[str]) -> list[dict[str, Any]]:
    """The first ``rows`` rows of ``path`` to send, or a one-line DataError naming the file,
    what is wrong with it and the fix."""
    import pandas as pd

    from ctloop.serving import client

    kind = "Parquet" if path.suffix == ".parquet" else "CSV"
    if path.stat().st_size == 0:
        raise DataError(f"--data {path} is empty; {_FILE_FIX}")
    if kind == "Parquet":
        # Checked here: pandas' Parquet reader, failing on such a file, aborts the interpreter
        # at exit (pyarrow 10).
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(max(0, path.stat().st_size - 4))
            tail = handle.read(4)
        if path.stat().st_size < 12 or head != b"PAR1" or tail != b"PAR1":
            raise DataError(f"--data {path} is not a readable Parquet file (it does not start "
                            f"and end with Parquet's magic bytes PAR1); {_FILE_FIX}")
    try:
        instances = client.rows_from_file(path, rows, drop)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"--data {path} is empty ({_first_line(exc)}); {_FILE_FIX}") from exc
    except Exception as exc:  # noqa: BLE001 - pandas and pyarrow raise many kinds for a bad file
        raise DataError(f"--data {path} is not a readable {kind} file ({_first_line(exc)}); "
                        f"{_FILE_FIX}") from exc
    if not instances:
        raise DataError(f"--data {path} has no rows (a header at most); {_FILE_FIX}")
    if not instances[0]:
        raise DataError(f"--data {path} has no column left to send after --drop "
                        f"{' --drop '.join(drop)}; drop fewer columns")
    return instances


def _columns_error(path: Path, exc: CtloopError) -> DataError | None:
    """The server's 400 for columns the model lacks or does not take (the wording of
    ``ctloop.serving.decode.check_names``), as a one-line error about the file; None for
    another error."""
    if found := re.search(r"lacks feature\(s\) (.+?); send every feature", str(exc)):
        return DataError(f"--data {path} lacks the model's feature(s) {found.group(1)}; add "
                         "those columns to the file (empty where a value is missing)")
    if found := re.search(r"has unknown feature\(s\) (.+?); send only", str(exc)):
        names = found.group(1).split(", ")
        return DataError(f"--data {path} has column(s) the model does not take: "
                         f"{', '.join(names)}; leave them out with --drop "
                         f"{' --drop '.join(names)}")
    return None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
