# The serving image: the KServe 0.21 model server with TensorFlow 2.21 (`ctloop serve`), from the
# serving lock. On a cluster it is an InferenceService's custom predictor: KServe's storage
# initializer puts the model at /mnt/models, the server listens on 8080 (V1, V2, health, metrics).
#   docker build -f docker/serving.Dockerfile -t ctloop-serving:0.1.0 .      (scripts/images.sh)
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==${UV_VERSION} \
    && uv venv /opt/venv --python /usr/local/bin/python
COPY locks/serving.txt /tmp/lock.txt
RUN uv pip sync --no-cache --python /opt/venv/bin/python --compile-bytecode /tmp/lock.txt
COPY pyproject.toml README.md /src/
COPY ctloop /src/ctloop
COPY components /src/components
COPY pipelines /src/pipelines
RUN uv pip install --no-cache --python /opt/venv/bin/python --no-deps --compile-bytecode /src

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
RUN useradd --uid 10001 --user-group --create-home ctloop
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/ctloop
EXPOSE 8080
ENTRYPOINT ["ctloop", "serve"]
CMD ["--model-dir", "/mnt/models", "--port", "8080"]
