#!/usr/bin/env bash
# The loop closed (README "Monitoring"): span 1 trains version 1; a server records what it serves;
# `ctloop monitor` sees clean traffic as no drift, then shifted traffic (older, richer customers on
# pricier plans) as drift in the features that moved, and starts one CT run on the new span; the
# server picks up the new version, and its own traffic is no drift against its training data.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

WORKDIR=${WORKDIR:-work/monitor-demo}
PORT=${PORT:-8081}
PIPELINE_BIN=${PIPELINE_BIN:-.venv/pipeline/bin}
SERVING_BIN=${SERVING_BIN:-.venv/serving/bin}
MODEL=${MODEL:-churn}
SHIFT=${SHIFT:-0.8}
WINDOW=${WINDOW:-1000}
URL="http://127.0.0.1:$PORT"
ctloop() { "$PIPELINE_BIN/ctloop" "$@"; }
# `ctloop run` (and so the triggered run) runs infra validation in the serving environment.
CTLOOP_SERVING_PYTHON=${CTLOOP_SERVING_PYTHON:-$(cd "$SERVING_BIN" && pwd)/python}
export CTLOOP_SERVING_PYTHON

rm -rf "$WORKDIR"
mkdir -p "$WORKDIR"
RUN_FLAGS=(--local --data "$WORKDIR/data" --label churned --exclude customer_id
           --model-name "$MODEL" --workdir "$WORKDIR"
           # Retraining on drifted data is the point: drift from the last span, and numbers
           # beyond its range, are expected (type and schema anomalies still block).
           --anomaly-policy CTLOOP_DRIFT=warn --anomaly-policy CTLOOP_NEW_VALUES=warn
           # The demo is about retraining on drift: each blessed model serves at once, with no
           # approval step (`make run` shows staging and the approval).
           --release-stage production)

echo "== span 1: the first CT run =="
ctloop datagen --out "$WORKDIR/data" --first-span 1 --spans 1 --rows 5000 >/dev/null
ctloop run "${RUN_FLAGS[@]}" --log "$WORKDIR/run-span-1.log" | tail -n 3

echo "== serving the registry on $URL, recording every request to $WORKDIR/records =="
start_server "$WORKDIR/server.log" "$URL" "$SERVING_BIN/ctloop" serve --registry "$WORKDIR/registry" \
  --model-name "$MODEL" --port "$PORT" \
  --record-dir "$WORKDIR/records"

# Traffic: a file of generated rows per window, sent 50 rows a request (label and ID dropped).
send() {
  local name=$1 span=$2 drift=$3
  ctloop datagen --out "$WORKDIR/traffic-$name" --first-span "$span" --spans 1 \
    --rows "$WINDOW" --drift "$drift" --seed 7 >/dev/null
  "$PIPELINE_BIN/python" - "$URL" "$MODEL" "$WORKDIR/traffic-$name/span-$span/data.csv" <<'EOF'
import sys
from pathlib import Path

from ctloop.serving import client

url, model, path = sys.argv[1], sys.argv[2], Path(sys.argv[3])
rows = client.rows_from_file(path, 10**9, ["churned", "customer_id"])
for start in range(0, len(rows), 50):
    client.predict_raw(url, model, rows[start:start + 50])
print(f"sent {len(rows)} rows of {path.parent.name} ({path.parent.parent.name})")
EOF
  sleep 1  # the recorder flushes every 0.5 s
}
monitor() {
  local out=$1; shift
  ctloop monitor --records "$WORKDIR/records" --registry "$WORKDIR/registry" \
    --model-name "$MODEL" --window "$WINDOW" --out "$WORKDIR/$out" \
    --prom-file "$WORKDIR/textfile/ctloop.prom" "$@"
}

echo "== clean traffic: two windows like the training data =="
send clean-a 11 0
send clean-b 12 0
monitor monitor-1-clean --trigger run -- "${RUN_FLAGS[@]}" --log "$WORKDIR/run-span-2.log"

echo "== shifted traffic (drift $SHIFT); its labelled rows arrive as span 2 =="
ctloop datagen --out "$WORKDIR/data" --first-span 2 --spans 1 --rows 5000 --drift "$SHIFT" \
  >/dev/null
send shifted-a 13 "$SHIFT"
send shifted-b 14 "$SHIFT"
monitor monitor-2-shifted --trigger run -- "${RUN_FLAGS[@]}" --log "$WORKDIR/run-span-2.log"
tail -n 3 "$WORKDIR/run-span-2.log" || true

echo "== a second pass right after the run: the window holds no rows of the new version yet =="
monitor monitor-3-again --trigger run -- "${RUN_FLAGS[@]}" --log "$WORKDIR/run-span-2b.log"

echo "== the server follows the registry; shifted traffic to the new version =="
answered_version() {
  "$PIPELINE_BIN/python" -c 'import sys
from pathlib import Path
from ctloop.serving import client
row = client.rows_from_file(Path(sys.argv[3]), 1, ["churned", "customer_id"])
print(client.predict_raw(sys.argv[1], sys.argv[2], row)["model_version"])' \
    "$URL" "$MODEL" "$WORKDIR/traffic-shifted-a/span-13/data.csv"
}
for _ in $(seq 1 30); do
  version=$(answered_version)
  [[ $version != 1 ]] && break
  sleep 1
done
echo "serving version $version"
send shifted-c 15 "$SHIFT"
send shifted-d 16 "$SHIFT"
monitor monitor-4-new-version --trigger run -- "${RUN_FLAGS[@]}" --log "$WORKDIR/run-span-2c.log"
echo "== done: reports in $WORKDIR/monitor-*/report.md, metrics in $WORKDIR/textfile/ctloop.prom =="
