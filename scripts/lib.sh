#!/usr/bin/env bash
# Shared by scripts/kind-up.sh, images.sh, e2e.sh and kind-down.sh: source it, do not run it.

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
