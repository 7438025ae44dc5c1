# The pipeline image: every component of the CT pipeline runs in it (CPU). Built from the same lock
# file as the local pipeline environment, so what the tests ran is what the image ships.
#   docker build -f docker/pipeline.Dockerfile -t ctloop-pipeline:0.1.0 .    (scripts/images.sh)
# The base is pinned to a Python patch release; for a byte-identical base, append its digest
# (docker buildx imagetools inspect python:3.11.17-slim-bookworm) as PYTHON_IMAGE=...@sha256:...
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
# Never a downloaded Python; bytecode compiled at install, or every task process recompiles
# TensorFlow's sources (KFP starts one process per task).
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==${UV_VERSION} \
    && uv venv /opt/venv --python /usr/local/bin/python
COPY locks/pipeline.txt /tmp/lock.txt
RUN uv pip sync --no-cache --python /opt/venv/bin/python --compile-bytecode /tmp/lock.txt
# The project last and without dependencies: a source change rebuilds this layer only.
COPY pyproject.toml README.md /src/
COPY ctloop /src/ctloop
COPY components /src/components
COPY pipelines /src/pipelines
RUN uv pip install --no-cache --python /opt/venv/bin/python --no-deps --compile-bytecode /src

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
# KFP's launcher stages artifacts under /minio, /s3, /gcs and /oci at the container's root: they
# must exist and belong to the user the tasks run as.
RUN useradd --uid 10001 --user-group --create-home ctloop \
    && mkdir /minio /s3 /gcs /oci && chown ctloop:ctloop /minio /s3 /gcs /oci
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/ctloop
