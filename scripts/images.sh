#!/usr/bin/env bash
# Builds ctloop's images from the lock files and loads them into the kind cluster, where pods use
# them without a registry (their tags are not :latest, so kubelet never tries to pull them).
# GPU=1 also builds the GPU variant of the pipeline image. Idempotent (Docker's layer cache).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

GPU=${GPU:-0}
VERSION=$(ctloop_version)
names=(pipeline serving)
if [[ "$GPU" == 1 ]]; then names+=(pipeline-gpu); fi

require docker kind
for name in "${names[@]}"; do
  image="ctloop-$name:$VERSION"
  echo "== $image"
  docker build -f "docker/$name.Dockerfile" -t "$image" .
  kind load docker-image "$image" --name "$CLUSTER"
done
