"""Where the CT pipeline's train task runs: its accelerators, and the GPU variant's nodes."""

import dataclasses
from typing import Optional

from kfp import dsl, kubernetes

from ctloop.kfp.images import PIPELINE_GPU_IMAGE


@dataclasses.dataclass(frozen=True)
class GpuSettings:
    """How the GPU variant's train task is scheduled and run: Kubernetes scheduling is fixed at
    compile time, so these are compile-time settings, not pipeline parameters.

    Attributes:
        image: The train task's image (TensorFlow with CUDA).
        node_selector: (label, value) pairs a node must have; by default the label NVIDIA's GPU
            operator puts on GPU nodes.
        tolerations: (taint key, effect) pairs tolerated with operator Exists; by default the
            taint GKE, AKS and EKS GPU node pools carry.
        shm_size: Size of the memory-backed /dev/shm.
    """

    image: str = PIPELINE_GPU_IMAGE
    node_selector: tuple = (("nvidia.com/gpu.present", "true"),)
    tolerations: tuple = (("nvidia.com/gpu", "NoSchedule"),)
    shm_size: str = "2Gi"


def schedule_train(trained: dsl.PipelineTask, gpu: Optional[GpuSettings], gpu_count,
                   accelerator_type) -> None:
    """Request ``gpu_count`` accelerators of ``accelerator_type`` (pipeline parameters) for the
    train task; with ``gpu``, also pin it to GPU nodes and give it a memory-backed /dev/shm."""
    trained.set_accelerator_type(accelerator_type).set_accelerator_limit(gpu_count)
    if not gpu:
        return
    for key, value in gpu.node_selector:
        kubernetes.add_node_selector(trained, label_key=key, label_value=value)
    for key, effect in gpu.tolerations:
        kubernetes.add_toleration(trained, key=key, operator="Exists", effect=effect)
    # NCCL and tf.data exchange buffers through /dev/shm, which is 64 MiB in a container by
    # default: a memory-backed volume gives them room.
    kubernetes.empty_dir_mount(trained, volume_name="dshm", mount_path="/dev/shm",
                               medium="Memory", size_limit=gpu.shm_size)
