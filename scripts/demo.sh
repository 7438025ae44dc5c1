#!/usr/bin/env bash
# The README's main job: two continuous-training iterations on built-in data, then serve and query.
set -euo pipefail

WORKDIR=${WORKDIR:-work}
PORT=${PORT:-8080}
PIPELINE_BIN=${PIPELINE_BIN:-.venv/pipeline/bin}
SERVING_BIN=${SERVING_BIN:-.venv/serving/bin}
MODEL=${MODEL:-churn}
ctloop() { "$PIPELINE_BIN/ctloop" "$@"; }

rm -rf "$WORKDIR"
mkdir -p "$WORKDIR"
run_span() {
  local span=$1
  echo "== span $span arrives: continuous-training iteration $span =="
  ctloop datagen --out "$WORKDIR/data" --first-span "$span" --spans 1 --rows 5000 >/dev/null
  ctloop run --local --data "$WORKDIR/data" --label churned --exclude customer_id \
    --model-name "$MODEL" --workdir "$WORKDIR" --summary "$WORKDIR/summary-span-$span.json" \
    --log "$WORKDIR/run-span-$span.log" || { tail -n 40 "$WORKDIR/run-span-$span.log"; exit 1; }
}
run_span 1
run_span 2

echo "== serving the registry's serving version on 127.0.0.1:$PORT =="
ctloop datagen --out "$WORKDIR/heldout" --first-span 3 --spans 1 --rows 200 >/dev/null
"$SERVING_BIN/ctloop" serve --registry "$WORKDIR/registry" --model-name "$MODEL" --port "$PORT" \
  >"$WORKDIR/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$WORKDIR/server.log"; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null || {
  echo "model server not ready after 120 s"; tail -n 40 "$WORKDIR/server.log"; exit 1; }
ctloop predict --url "http://127.0.0.1:$PORT" --model-name "$MODEL" \
  --data "$WORKDIR/heldout/span-3/data.csv" --drop churned --drop customer_id --rows 5 --requests 50
echo "== done: summaries in $WORKDIR/summary-span-*.json, server log in $WORKDIR/server.log =="
