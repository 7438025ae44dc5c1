#!/usr/bin/env bash
# End to end on the kind cluster of `make kind-up`, with the images of `make images`: built-in
# data into KFP's SeaweedFS, compile, upload, one CT run, wait for it to succeed.
# Rerunnable: the data is overwritten, an unchanged pipeline is not uploaded again.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

KFP_HOST=${KFP_HOST:-http://localhost:8080}
PIPELINE_BIN=${PIPELINE_BIN:-.venv/pipeline/bin}
WORKDIR=${WORKDIR:-work/e2e}
RUN_TIMEOUT=${RUN_TIMEOUT:-3600}
S3_PORT=${S3_PORT:-18333}
export KFP_HOST

require kubectl curl
ctloop() { "$PIPELINE_BIN/ctloop" "$@"; }
retry 120 curl -sf -o /dev/null "$KFP_HOST/apis/v2beta1/healthz"

echo "== span 1 of the built-in data into s3://mlpipeline/ctloop/data (KFP's SeaweedFS)"
rm -rf "$WORKDIR" && mkdir -p "$WORKDIR"
ctloop datagen --out "$WORKDIR/data" --spans 1 --rows 5000 >/dev/null
k -n kubeflow port-forward service/seaweedfs "$S3_PORT:8333" >"$WORKDIR/port-forward.log" 2>&1 &
forward=$!
trap 'kill "$forward" 2>/dev/null || true' EXIT
secret() { k -n kubeflow get secret mlpipeline-minio-artifact -o "jsonpath={.data.$1}" | base64 -d; }
retry 60 curl -s -o /dev/null "http://127.0.0.1:$S3_PORT"  # any answer: the forward is up
AWS_ACCESS_KEY_ID=$(secret accesskey) AWS_SECRET_ACCESS_KEY=$(secret secretkey) \
  "$PIPELINE_BIN/python" - "http://127.0.0.1:$S3_PORT" "$WORKDIR/data" <<'PY'
import pathlib, sys
import boto3
endpoint, root = sys.argv[1], pathlib.Path(sys.argv[2])
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
for path in sorted(root.rglob("*.csv")):
    s3.upload_file(str(path), "mlpipeline", f"ctloop/data/{path.relative_to(root)}")
PY

# The tasks read s3:// with boto3's standard credential chain: the pipeline must give its task
# pods the store's credentials (kfp-kubernetes use_secret_as_env), and registry_uri must be a
# folder every task sees (a shared volume) for the registry to outlive a run. Until
# pipelines/ct_pipeline.py does both, the run fails at select-span, saying so in its log.
echo "== compile, upload, run"
ctloop compile --output "$WORKDIR/ct_pipeline.yaml" --components-dir "$WORKDIR/components"
ctloop upload --package "$WORKDIR/ct_pipeline.yaml"
ctloop submit --param data_uri=s3://mlpipeline/ctloop/data \
  --param s3_endpoint_url=http://seaweedfs.kubeflow:9000 --param label=churned \
  --param 'exclude=["customer_id"]' --param registry_uri=/tmp/ctloop-registry \
  --param model_name=churn --param epochs=3 --wait --timeout "$RUN_TIMEOUT"

# TODO(kserve rollout): components/rollout/kserve.py builds and applies InferenceServices but is
# not wired into the rollout component yet, so a run creates none. Once it is, assert here that
# the InferenceService the run created in ctloop-serving is Ready and answers a V1 predict:
#   k -n ctloop-serving wait --for=condition=Ready inferenceservice/churn --timeout 600s
#   k -n ctloop-serving port-forward service/churn-predictor 18080:80 &
#   ctloop predict --url http://127.0.0.1:18080 --model-name churn \
#     --data "$WORKDIR/data/span-1/data.csv" --drop churned --drop customer_id --rows 5
echo "== e2e passed: the CT run succeeded on kind"
