#!/usr/bin/env bash
# End to end on the kind cluster of `make kind-up`, with the images of `make images`: built-in
# data into KFP's SeaweedFS, compile, upload, two CT runs (a cold start, then a canary), each
# ending with the InferenceService answering as the version the run promoted.
# Rerunnable only on a fresh registry: kind-down and kind-up first (the registry and the
# InferenceService outlive a run, which is what they are for).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

KFP_HOST=${KFP_HOST:-http://localhost:8880}
PIPELINE_BIN=${PIPELINE_BIN:-.venv/pipeline/bin}
WORKDIR=${WORKDIR:-work/e2e}
RUN_TIMEOUT=${RUN_TIMEOUT:-3600}
S3_PORT=${S3_PORT:-18333}
export KFP_HOST

require kubectl curl
ctloop() { "$PIPELINE_BIN/ctloop" "$@"; }
retry 120 curl -sf -o /dev/null "$KFP_HOST/apis/v2beta1/healthz"

upload_spans() {  # upload_spans FIRST LAST: spans of the built-in data into SeaweedFS
  AWS_ACCESS_KEY_ID=$(secret accesskey) AWS_SECRET_ACCESS_KEY=$(secret secretkey) \
    "$PIPELINE_BIN/python" - "http://127.0.0.1:$S3_PORT" "$WORKDIR/data" "$1" "$2" <<'PY'
import pathlib, sys
import boto3
endpoint, root, first, last = sys.argv[1], pathlib.Path(sys.argv[2]), *map(int, sys.argv[3:])
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
for span in range(first, last + 1):
    for path in sorted((root / f"span-{span}").rglob("*.csv")):
        s3.upload_file(str(path), "mlpipeline", f"ctloop/data/{path.relative_to(root)}")
PY
}

# One CT run on the cluster: data and registry in SeaweedFS (the tasks get its credentials from
# KFP's own Secret, storage_secret), served by KServe (serving_target=kserve).
ct_run() {
  ctloop submit --param data_uri=s3://mlpipeline/ctloop/data \
    --param s3_endpoint_url=http://seaweedfs.kubeflow:9000 --param label=churned \
    --param 'exclude=["customer_id"]' --param registry_uri=s3://mlpipeline/ctloop/registry \
    --param model_name=churn --param epochs=3 --param serving_target=kserve \
    --param infra_startup_timeout_s=900 --wait --timeout "$RUN_TIMEOUT"
}

# The InferenceService serves registry version $1 (its predictor's annotation; the
# InferenceService's own annotations would restart pods) and answers a V1 predict.
check_served() {
  local isvc service
  k -n ctloop-serving wait --for=condition=Ready inferenceservice/churn --timeout 600s
  isvc=$(k -n ctloop-serving get inferenceservice churn -o json)
  "$PIPELINE_BIN/python" -c '
import json, sys
isvc, want = json.load(sys.stdin), sys.argv[1]
predictor = isvc["spec"]["predictor"]
got = (predictor.get("annotations") or {}).get("ctloop/model-version")
if isvc["spec"].get("canary"):
    sys.exit("error: a canary is still running: " + json.dumps(isvc["spec"]["canary"]))
sys.exit(0 if got == want else f"error: InferenceService serves version {got}, not {want}")
' "$1" <<<"$isvc"
  service=$("$PIPELINE_BIN/python" -c '
import json, sys
print(json.load(sys.stdin)["status"]["address"]["url"].split("//")[1].split(".")[0])
' <<<"$isvc")
  k -n ctloop-serving port-forward "service/$service" 18080:80 >"$WORKDIR/predict-forward.log" 2>&1 &
  local predict_forward=$!
  retry 60 curl -s -o /dev/null http://127.0.0.1:18080
  ctloop predict --url http://127.0.0.1:18080 --model-name churn \
    --data "$WORKDIR/data/span-1/data.csv" --drop churned --drop customer_id --rows 5
  kill "$predict_forward"
}

echo "== built-in data: span 1 into s3://mlpipeline/ctloop/data (KFP's SeaweedFS)"
rm -rf "$WORKDIR" && mkdir -p "$WORKDIR"
ctloop datagen --out "$WORKDIR/data" --spans 2 --rows 5000 >/dev/null
k -n kubeflow port-forward service/seaweedfs "$S3_PORT:8333" >"$WORKDIR/port-forward.log" 2>&1 &
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # every port-forward this script started
secret() { k -n kubeflow get secret mlpipeline-minio-artifact -o "jsonpath={.data.$1}" | base64 -d; }
retry 60 curl -s -o /dev/null "http://127.0.0.1:$S3_PORT"  # any answer: the forward is up
upload_spans 1 1

echo "== compile, upload"
ctloop compile --output "$WORKDIR/ct_pipeline.yaml" --components-dir "$WORKDIR/components"
ctloop upload --package "$WORKDIR/ct_pipeline.yaml"

echo "== run 1: cold start, deployed directly as InferenceService ctloop-serving/churn"
ct_run
check_served 1

echo "== run 2: span 2 as a canary beside version 1, then promoted"
upload_spans 2 2
ct_run
check_served 2
echo "== e2e passed: two CT runs on kind; KServe serves version 2"
