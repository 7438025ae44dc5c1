#!/usr/bin/env bash
# The README's main job: continuous training on built-in data, with a live server in between.
# Span 1 trains the first model; a KServe server starts on the registry; span 2's model is a
# canary on that running server, promoted or rolled back by its errors and latency; held-out
# rows are then sent to the server.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

WORKDIR=${WORKDIR:-work}
PORT=${PORT:-8080}
PIPELINE_BIN=${PIPELINE_BIN:-.venv/pipeline/bin}
SERVING_BIN=${SERVING_BIN:-.venv/serving/bin}
MODEL=${MODEL:-churn}
URL="http://127.0.0.1:$PORT"
ctloop() { "$PIPELINE_BIN/ctloop" "$@"; }

rm -rf "$WORKDIR"
mkdir -p "$WORKDIR"
run_span() {
  local span=$1; shift
  echo "== span $span arrives: continuous-training iteration $span =="
  ctloop run -c "$WORKDIR/ctloop.yaml" --workdir "$WORKDIR" \
    --summary "$WORKDIR/summary-span-$span.json" --log "$WORKDIR/run-span-$span.log" "$@" \
    || { tail -n 40 "$WORKDIR/run-span-$span.log"; exit 1; }
}

ctloop datagen --out "$WORKDIR/data" --first-span 1 --spans 1 --rows 5000 >/dev/null
# The settings file: label, task and excluded columns proposed from the data.
ctloop config init --data "$WORKDIR/data" --model-name "$MODEL" -o "$WORKDIR/ctloop.yaml"
run_span 1

echo "== serving the registry on $URL (the server follows the registry) =="
start_server "$WORKDIR/server.log" "$URL" "$SERVING_BIN/ctloop" serve --registry "$WORKDIR/registry" \
  --model-name "$MODEL" --port "$PORT"

ctloop datagen --out "$WORKDIR/data" --first-span 2 --spans 1 --rows 5000 >/dev/null
run_span 2 --serving-url "$URL"

echo "== held-out rows to the running server =="
ctloop datagen --out "$WORKDIR/heldout" --first-span 3 --spans 1 --rows 200 >/dev/null
ctloop predict --url "$URL" --model-name "$MODEL" \
  --data "$WORKDIR/heldout/span-3/data.csv" --drop churned --drop customer_id --rows 5 --requests 50
echo "== done: summaries in $WORKDIR/summary-span-*.json, server log in $WORKDIR/server.log =="
