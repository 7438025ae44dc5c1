# The GPU variant of the pipeline image: the CPU image plus TensorFlow 2.16.2's CUDA libraries as
# NVIDIA's wheels (tensorflow[and-cuda]==2.16.2: CUDA 12.3, cuDNN 8.9, NCCL 2.19). The node brings
# the driver (NVIDIA device plugin / container toolkit); nothing else in the image changes:
# locks/pipeline-gpu.txt is locks/pipeline.txt plus those wheels (tests/test_images.py checks).
#   docker build -f docker/pipeline-gpu.Dockerfile -t ctloop-pipeline-gpu:0.1.0 .
# The GPU variant of the pipeline (`ctloop compile --gpu`, pipelines/ct_pipeline_gpu.yaml) runs
# its train task on it.
ARG PIPELINE_IMAGE=ctloop-pipeline:0.1.0
FROM ${PIPELINE_IMAGE}
ARG UV_VERSION=0.13.9
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
USER root
COPY locks/pipeline-gpu.txt /tmp/lock.txt
# install, not sync: sync would remove the project, which no lock lists. Every other pin is the
# CPU image's, so only the NVIDIA wheels are added. uv leaves with the lock.
RUN pip install --no-cache-dir uv==${UV_VERSION} \
    && uv pip install --no-cache --python /opt/venv/bin/python --compile-bytecode -r /tmp/lock.txt \
    && pip uninstall --yes uv && rm /tmp/lock.txt
# TF 2.16 does not find the wheels' libraries by itself (tensorflow/tensorflow#63362): name them.
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cuda_cupti/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cufft/lib:/opt/venv/lib/python3.11/site-packages/nvidia/curand/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cusolver/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cusparse/lib:/opt/venv/lib/python3.11/site-packages/nvidia/nccl/lib:/opt/venv/lib/python3.11/site-packages/nvidia/nvjitlink/lib
# XLA compiles kernels with ptxas, which the nvcc wheel ships.
ENV PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cuda_nvcc/bin:$PATH
USER 10001:10001
