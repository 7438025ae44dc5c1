#!/usr/bin/env bash
# The README's main job: continuous training on built-in data, with a server per registry stage.
# Span 1 trains the first model, which lands in staging; a person's approval (`ctloop promote`)
# moves it to production. A server per stage follows the registry. Span 2's model is released
# into staging as a shadow of the staged version (a copy of its requests, answers compared),
# then approved into production, which the production server follows. Held-out rows are then
# sent to both servers, each answering with its own stage's version.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

WORKDIR=${WORKDIR:-work}
PORT=${PORT:-8080}
STAGING_PORT=${STAGING_PORT:-$((PORT + 1))}
PIPELINE_BIN=${PIPELINE_BIN:-.venv/pipeline/bin}
SERVING_BIN=${SERVING_BIN:-.venv/serving/bin}
MODEL=${MODEL:-churn}
URL="http://127.0.0.1:$PORT"
STAGING_URL="http://127.0.0.1:$STAGING_PORT"
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
approve() {
  local version=$1 why=$2
  echo "== approval: version $version from staging to production =="
  ctloop promote "$MODEL" "$version" --to production --approved-by "make run" --reason "$why" \
    --registry "$WORKDIR/registry"
}
staged_version() {
  "$PIPELINE_BIN/python" -c 'import json, sys
print(json.load(open(sys.argv[1])).get("pushed_version") or "")' "$WORKDIR/summary-span-$1.json"
}

ctloop datagen --out "$WORKDIR/data" --first-span 1 --spans 1 --rows 5000 >/dev/null
# The settings file: label, task and excluded columns proposed from the data.
ctloop config init --data "$WORKDIR/data" --model-name "$MODEL" -o "$WORKDIR/ctloop.yaml"
run_span 1
approve "$(staged_version 1)" "first model: blessed on span 1 (beats no-skill), infra-validated"

echo "== a server per stage: production on $URL, staging on $STAGING_URL =="
start_server "$WORKDIR/server-production.log" "$URL" "$SERVING_BIN/ctloop" serve \
  --registry "$WORKDIR/registry" --stage production --model-name "$MODEL" --port "$PORT"
start_server "$WORKDIR/server-staging.log" "$STAGING_URL" "$SERVING_BIN/ctloop" serve \
  --registry "$WORKDIR/registry" --stage staging --model-name "$MODEL" --port "$STAGING_PORT"

ctloop datagen --out "$WORKDIR/data" --first-span 2 --spans 1 --rows 5000 >/dev/null
run_span 2 --serving-url "$STAGING_URL" --release-strategy shadow
predict() {
  ctloop predict --url "$1" --model-name "$MODEL" --data "$WORKDIR/heldout/span-3/data.csv" \
    --drop churned --drop customer_id --rows 3 --requests 50
}
ctloop datagen --out "$WORKDIR/heldout" --first-span 3 --spans 1 --rows 200 >/dev/null
echo "== held-out rows to each stage's server: each answers with its own stage's version =="
predict "$URL"
predict "$STAGING_URL"

staged=$(staged_version 2)
if [[ -n $staged ]]; then
  approve "$staged" "span 2: blessed against version 1; its shadow in staging agreed"
  sleep 2  # the production server reads its stage's pointer every second
  echo "== production after the approval =="
  predict "$URL"
fi
ctloop versions --registry "$WORKDIR/registry" --model-name "$MODEL"
echo "== done: summaries in $WORKDIR/summary-span-*.json, server logs in $WORKDIR/server-*.log =="
