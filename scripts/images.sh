#!/usr/bin/env bash
# Builds ctloop's images from the lock files and loads them into the kind cluster, where pods use
# them without a registry (their tags are not :latest, so kubelet never tries to pull them).
# Also loads the image of KServe's storage initializer, which every model pod starts with: pulled
# once here, not by the first infra-validation pod against its deadline. GPU=1 also builds the
# GPU variant of the pipeline image. Idempotent (Docker's layer cache). Run after kind-up.
# x86_64 only: tfx-bsl and TFDV 1.16 publish no arm64 wheels, so the pipeline image cannot be
# built for arm64 (e.g. Apple silicon without emulation).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

GPU=${GPU:-0}
VERSION=$(ctloop_version)
names=(pipeline serving)
if [[ "$GPU" == 1 ]]; then names+=(pipeline-gpu); fi

require docker kind kubectl python3
arch=$(docker info --format '{{.Architecture}}')
if [[ "$arch" != x86_64 ]]; then
  echo "error: Docker runs on $arch; ctloop's images build on x86_64 only (tfx-bsl and TFDV 1.16 have no arm64 wheels)" >&2
  exit 1
fi

for name in "${names[@]}"; do
  image="ctloop-$name:$VERSION"
  echo "== $image"
  docker build -f "docker/$name.Dockerfile" -t "$image" .
  kind load docker-image "$image" --name "$CLUSTER"
done

# The storage initializer image KServe's configuration names (inferenceservice-config).
initializer=$(k -n kserve get configmap inferenceservice-config -o jsonpath='{.data.storageInitializer}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["image"])')
echo "== $initializer (KServe's storage initializer)"
docker pull "$initializer"
kind load docker-image "$initializer" --name "$CLUSTER"
