#!/usr/bin/env bash
# A kind cluster with KFP standalone, cert-manager, KServe (Standard mode) and ctloop's namespace,
# RBAC and storage access (manifests/overlays/kind). Idempotent: rerun it to finish or repair.
#
# KServe runs in Standard (RawDeployment) mode: a plain Deployment and Service per model, no
# Knative or Istio to install on a laptop; canaries then come from spec.canary (KServe >= 0.20),
# not from Knative's canaryTrafficPercent.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

KIND_VERSION=${KIND_VERSION:-v0.27.0}
KFP_VERSION=${KFP_VERSION:-2.17.0}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.17.0}
KSERVE_VERSION=${KSERVE_VERSION:-v0.21.0}
TIMEOUT=${TIMEOUT:-900s}
KFP_PORT=${KFP_PORT:-8880}  # kind-cluster.yaml's host port (make run's server has 8080)

# git: kubectl fetches KFP's remote kustomizations with it; curl: the health checks.
require docker kind kubectl python3 curl git
if [[ "$(kind version)" != "kind $KIND_VERSION "* ]]; then
  echo "warning: $(kind version); kind-cluster.yaml's node image is built for kind $KIND_VERSION" >&2
fi

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "== cluster $CLUSTER exists"
else
  echo "== creating cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config kind-cluster.yaml --wait "$TIMEOUT"
fi

echo "== KFP $KFP_VERSION (standalone)"
kfp=github.com/kubeflow/pipelines/manifests/kustomize
k apply -k "$kfp/cluster-scoped-resources?ref=$KFP_VERSION"
k wait --for condition=established --timeout=120s crd/applications.app.k8s.io
retry 300 k apply -k "$kfp/env/platform-agnostic?ref=$KFP_VERSION"
# The UI (which proxies the API) on the node port kind-cluster.yaml maps to localhost:8080.
k -n kubeflow patch service ml-pipeline-ui --type merge -p \
  '{"spec":{"type":"NodePort","ports":[{"name":"http","port":80,"targetPort":3000,"nodePort":30080}]}}'

echo "== cert-manager $CERT_MANAGER_VERSION (KServe's webhook certificates)"
k apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
k -n cert-manager wait --for=condition=Available deployment --all --timeout "$TIMEOUT"

echo "== KServe $KSERVE_VERSION (Standard mode)"
kserve=https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION
# Since 0.20 the release's kserve.yaml carries no Namespace object (hack/release/
# generate-install.sh filters it out): without this every namespaced object in it fails.
k create namespace kserve --dry-run=client -o yaml | k apply -f -
retry 300 k apply --server-side --force-conflicts -f "$kserve/kserve.yaml"
# Every controller, not only kserve-controller-manager: the cluster resources below include
# LLMInferenceServiceConfigs, whose webhook (llmisvc-controller-manager) has failurePolicy Fail.
k -n kserve wait --for=condition=Available deployment --all --timeout "$TIMEOUT"
retry 300 k apply --server-side --force-conflicts -f "$kserve/kserve-cluster-resources.yaml"
# Standard mode for every InferenceService, and no Ingress objects (kind has no ingress gateway;
# the scripts reach models through their Service). Without Gateway API HTTPRoutes, KServe gives a
# Standard-mode canary no share of the Service's traffic: rollout judges it on its own probe
# (a dark launch), and says so in its report.
config=$(mktemp -d)
trap 'rm -rf "$config"' EXIT
for key in deploy ingress; do
  k -n kserve get configmap inferenceservice-config -o "jsonpath={.data.$key}" >"$config/$key.json"
done
patch=$(python3 - "$config/deploy.json" "$config/ingress.json" <<'PY'
import json, sys
deploy, ingress = (json.load(open(path)) for path in sys.argv[1:])
deploy["defaultDeploymentMode"] = "Standard"
ingress["disableIngressCreation"] = True
print(json.dumps({"data": {"deploy": json.dumps(deploy), "ingress": json.dumps(ingress)}}))
PY
)
k -n kserve patch configmap inferenceservice-config --type merge -p "$patch"
k -n kserve rollout restart deployment/kserve-controller-manager
k -n kserve rollout status deployment/kserve-controller-manager --timeout "$TIMEOUT"
k -n kserve wait --for=condition=Available deployment --all --timeout "$TIMEOUT"

echo "== ctloop: serving namespace, rollout RBAC, model storage (manifests/overlays/kind)"
k apply -k manifests/overlays/kind

echo "== waiting for KFP (first start pulls its images: minutes)"
k -n kubeflow wait --for=condition=Available deployment --all --timeout "$TIMEOUT"
retry 300 curl -sf -o /dev/null "http://localhost:$KFP_PORT/apis/v2beta1/healthz"
echo "ready: KFP UI and API at http://localhost:$KFP_PORT — export KFP_HOST=http://localhost:$KFP_PORT"
