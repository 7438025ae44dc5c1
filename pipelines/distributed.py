"""The CT pipeline's multi-worker train variant: the train step as a TFJob (``train_job``).

``build(workers=WorkerSettings(workers=N))`` puts a train_job task where the train task was,
with the same inputs (the hyperparameters, the tuned ones, the gate) and the same outputs
(``model``, ``training_metrics``), so evaluate and every task after it stay as they are. The
job's shape is fixed at compile time, like the GPU variant's scheduling: the worker count and
resources go into the TFJob the task creates, not into the task's own pod, which only waits.

Why a TFJob (the Kubeflow Training Operator) and not KFP alone: see
``components/train_job/logic.py``. In short, MultiWorkerMirroredStrategy needs all workers
running at once with stable addresses and a TF_CONFIG naming them; KFP tasks have neither.
Locally (kfp.local, no cluster) train runs as before: the variant is for clusters.
"""

from __future__ import annotations

import dataclasses

from kfp import dsl

from ctloop.components.train_job.component import train_job
from ctloop.kfp.images import PIPELINE_IMAGE

# train's inputs that train_job does not take: the GPUs are the workers', set below.
_TRAIN_ONLY = ("gpu_count", "gpu_type")


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """The multi-worker job: compile-time settings (``ctloop compile --train-workers N``).

    Attributes:
        workers: Worker processes, at least 2.
        image: The workers' image (the pipeline image, or the GPU variant's).
        cpu: CPU each worker requests and is limited to.
        memory: Memory each worker requests and is limited to.
        gpus: Accelerators per worker (0: CPU workers).
        gpu_type: The accelerator resource.
        namespace: Where the TFJob runs: the run's namespace (KFP standalone: ``kubeflow``; a
            Kubeflow profile's namespace in multi-user Kubeflow), which holds the storage
            Secret and where manifests/ lets pipeline-runner manage tfjobs.
        timeout_s: The job must finish within this, or it is deleted and the task fails.
    """

    workers: int
    image: str = PIPELINE_IMAGE
    cpu: str = "2"
    memory: str = "4Gi"
    gpus: int = 0
    gpu_type: str = "nvidia.com/gpu"
    namespace: str = "kubeflow"
    timeout_s: float = 6 * 3600.0

    def __post_init__(self):
        from ctloop.components.train_job.logic import JobConfig

        # The same checks the task makes, at compile time: a bad setting fails `ctloop compile`.
        JobConfig(namespace=self.namespace, image=self.image, workers=self.workers,
                  cpu=self.cpu, memory=self.memory, gpus=self.gpus, gpu_type=self.gpu_type)


def multi_worker_train(settings: WorkerSettings, arguments: dict,
                       storage_secret) -> dsl.PipelineTask:
    """The train_job task in place of ``train(**arguments)``: ``arguments`` are train's (its
    GPU inputs dropped: the workers' GPUs are ``settings.gpus``); ``storage_secret`` (the
    pipeline parameter) is the Secret the workers read the artifacts with."""
    kept = {name: value for name, value in arguments.items() if name not in _TRAIN_ONLY}
    return train_job(
        **kept, workers=settings.workers, namespace=settings.namespace, image=settings.image,
        worker_cpu=settings.cpu, worker_memory=settings.memory, worker_gpus=settings.gpus,
        gpu_type=settings.gpu_type, storage_secret=storage_secret,
        timeout_s=settings.timeout_s)
