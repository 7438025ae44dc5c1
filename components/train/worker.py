"""One process of a multi-worker train job: ``python -m ctloop.components.train.worker SPEC``.

The replicas of the TFJob that the ``train_job`` component creates run this, each with the
``TF_CONFIG`` the Kubeflow Training Operator sets; it is the entry point, so it is where the
environment is read. Each fetches the splits, the schema and (warm start) the baseline to local
disk, runs ``logic.run`` with its ``Cluster`` (MultiWorkerMirroredStrategy), and the chief
uploads the model to ``<output_uri>/model/`` and what training reported to
``<output_uri>/result.json``, which train_job hands on as its outputs.

SPEC is a JSON object (train_job writes it; no user types it): ``train_uri``, ``eval_uri``,
``schema_uri`` (the folder holding schema.pbtxt), ``output_uri``, ``label``, ``exclude``,
``hp`` (``Hyperparameters`` fields), ``label_classes``, ``task``, ``mixed_precision``,
``user_module``, ``s3_endpoint_url``, ``warm_start_uri`` (None: off). URIs are local paths,
``minio://`` (KFP's artifact store, read over S3 at ``s3_endpoint_url``), ``s3://`` or ``gs://``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from ctloop.data import storage
from ctloop.settings import Hyperparameters
from ctloop.training import Cluster

RESULT_FILE = "result.json"
MODEL_FOLDER = "model"


def _remote(uri: str) -> str:
    # KFP's MinIO (SeaweedFS from KFP 2.15) speaks S3.
    return "s3://" + uri.removeprefix("minio://") if uri.startswith("minio://") else uri


def fetch(uri: str, target: Path, s3_endpoint_url: str | None) -> str:
    """``uri`` (a file or a folder) as a local path: itself if local, else copied under
    ``target``, keeping the folder's layout."""
    uri = _remote(uri)
    if not storage.is_remote(uri):
        return uri
    files = storage.list_files(uri, s3_endpoint_url)
    root = uri.rstrip("/")
    for stored in files:
        relative = stored.uri[len(root):].lstrip("/") or root.rsplit("/", 1)[-1]
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(storage.read(stored.uri, s3_endpoint_url)[0])
    single = len(files) == 1 and files[0].uri == root
    return str(target / root.rsplit("/", 1)[-1]) if single else str(target)


def publish(folder: Path, uri: str, s3_endpoint_url: str | None) -> None:
    """Copies every file under ``folder`` to ``uri`` (a local folder, s3://, minio:// or
    gs://)."""
    uri = _remote(uri).rstrip("/")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = path.relative_to(folder).as_posix()
        if not storage.is_remote(uri):
            Path(uri, key).parent.mkdir(parents=True, exist_ok=True)
            Path(uri, key).write_bytes(path.read_bytes())
            continue
        bucket, _, prefix = uri.split("://", 1)[1].partition("/")
        name = f"{prefix}/{key}" if prefix else key
        if uri.startswith("s3://"):
            storage.s3_client(s3_endpoint_url).upload_file(str(path), bucket, name)
        else:
            from google.cloud import storage as gcs

            gcs.Client().bucket(bucket).blob(name).upload_from_filename(str(path))


def main(spec: dict, cluster: Cluster) -> int:
    """Trains this process's part of the job; the chief publishes the model and result."""
    from ctloop.components.train import logic

    endpoint = spec.get("s3_endpoint_url") or None
    with tempfile.TemporaryDirectory(prefix="ctloop-worker-") as folder:
        local = Path(folder)
        paths = {name: fetch(spec[f"{name}_uri"], local / name, endpoint)
                 for name in ("train", "eval", "schema")}
        warm = spec.get("warm_start_uri")
        result = logic.run(
            train_path=paths["train"], eval_path=paths["eval"],
            schema_path=os.path.join(paths["schema"], "schema.pbtxt"), label=spec["label"],
            exclude=list(spec.get("exclude") or []),
            hp=Hyperparameters(**{**spec["hp"], "hidden_units": tuple(spec["hp"]["hidden_units"])}),
            model_dir=str(local / "out" / MODEL_FOLDER),
            label_classes=spec.get("label_classes") or None,
            mixed_precision=bool(spec.get("mixed_precision")),
            user_module=spec.get("user_module") or None, s3_endpoint_url=endpoint,
            task=spec.get("task", "binary"),
            warm_start_from=fetch(warm, local / "baseline", endpoint) if warm else None,
            cluster=cluster)
        if cluster.is_chief:
            described = dataclasses.asdict(result)
            described["features"] = [f.name for f in result.features]
            (local / "out" / RESULT_FILE).write_text(json.dumps(described, indent=2))
            publish(local / "out", spec["output_uri"], endpoint)
    print(f"train worker {cluster.task_type} {cluster.task_index} of {cluster.workers}: done"
          + (f", model at {spec['output_uri']}" if cluster.is_chief else ""))
    return 0


if __name__ == "__main__":
    # A pod's log is all a worker leaves: say which strategy and share it trained with.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(json.loads(sys.argv[1]), Cluster.of(os.environ.get("TF_CONFIG"))))
