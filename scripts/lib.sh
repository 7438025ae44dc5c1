#!/usr/bin/env bash
# Shared by the scripts in scripts/: source it, do not run it.

CLUSTER=${CLUSTER:-ctloop}
# Every kubectl call names the cluster's context: never whatever context is current.
k() { kubectl --context "kind-$CLUSTER" "$@"; }

# require TOOL...: stop before any work, naming each tool that is missing.
require() {
  local missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "error: ${missing[*]} not installed; this script needs: $*" >&2
    exit 1
  fi
}

# retry SECONDS COMMAND...: run COMMAND every 5 s until it succeeds or SECONDS have passed
# (webhooks that are not serving yet refuse applies for a while after their Deployment is up).
retry() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "error: still failing after the time allowed: $*" >&2
      return 1
    fi
    sleep 5
  done
}

# The image tag of this version of ctloop (ctloop/__init__.py), as the compiled pipeline uses it.
ctloop_version() { sed -n 's/^__version__ = "\(.*\)"$/\1/p' ctloop/__init__.py; }

# start_server LOG URL COMMAND...: run a model server (COMMAND) in the background, its output to
# LOG, stopped (with every other one started) when the script exits; wait up to 120 s until URL
# says it is ready.
SERVER_PIDS=()
stop_servers() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
start_server() {
  local log=$1 url=$2 pid
  shift 2
  "$@" >"$log" 2>&1 &
  pid=$!
  SERVER_PIDS+=("$pid")
  trap stop_servers EXIT
  for _ in $(seq 1 120); do
    curl -sf "$url/v2/health/ready" >/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 1
  done
  echo "model server not ready after 120 s"; tail -n 40 "$log"; exit 1
}
