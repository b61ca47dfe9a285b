#!/usr/bin/env bash
# Run specrec without Docker: the same two processes as docker-compose.yml.
#
#   1. bootstrap (foreground, once): the synthetic default dataset and a default model, each only
#      when missing, so a second run skips straight to 2;
#   2. specrec-worker (background): the training worker that runs POST /retrain jobs;
#   3. specrec-serve (the API) on HOST:PORT until Ctrl-C, which stops both.
#
# Environment (all optional): SPECREC_HOME (default ./var), HOST (127.0.0.1), PORT (8000),
# ADMIN_TOKEN (generated and printed when unset), READY_TIMEOUT_S (600); every other SPECREC_*
# variable reaches the worker and the API unchanged (README.md, Configuration).
# Expects the specrec-* console scripts on PATH (`make run` puts .venv/bin first).
set -euo pipefail

cd "$(dirname "$0")/.."
if ! command -v specrec-serve >/dev/null 2>&1 && [ -x .venv/bin/specrec-serve ]; then
  PATH="$PWD/.venv/bin:$PATH"
fi
for cmd in python specrec-worker specrec-serve; do
  command -v "$cmd" >/dev/null 2>&1 || {
    echo "run.sh: '$cmd' not found on PATH; use 'make run' (it creates .venv and installs specrec)" >&2
    exit 1
  }
done

export SPECREC_HOME="${SPECREC_HOME:-$PWD/var}"
export HOST="${HOST:-127.0.0.1}"
export PORT="${PORT:-8000}"
mkdir -p "$SPECREC_HOME"
SPECREC_HOME="$(cd "$SPECREC_HOME" && pwd)"

if [ -z "${ADMIN_TOKEN:-}" ]; then
  ADMIN_TOKEN="$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
  cat <<EOF
==============================================================================
 ADMIN_TOKEN was not set, so this run generated one (it changes every run;
 export ADMIN_TOKEN=... before 'make run' to choose your own):

   export ADMIN_TOKEN=$ADMIN_TOKEN

 Admin endpoints need the header:  Authorization: Bearer \$ADMIN_TOKEN
==============================================================================
EOF
fi
export ADMIN_TOKEN

# --- 1. bootstrap: dataset and default model, only what is missing --------------------------
models_dir="${SPECREC_MODELS_DIR:-$SPECREC_HOME/models}"
if [ -f "$models_dir/CURRENT" ] && [ -f "$SPECREC_HOME/data/default/interactions.csv" ]; then
  echo ">> reusing the published model in $models_dir"
else
  echo ">> first run: building the default dataset and model in $SPECREC_HOME (CPU, once)"
  started=$SECONDS
  specrec-worker --bootstrap-only
  echo ">> bootstrap done in $((SECONDS - started)) s"
fi

# --- 2 + 3. worker in the background, API until interrupted ---------------------------------
worker_pid=""
serve_pid=""

stop_children() {
  local pids=() pid i
  for pid in "$serve_pid" "$worker_pid"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then pids+=("$pid"); fi
  done
  [ "${#pids[@]}" -eq 0 ] && return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for i in $(seq 1 50); do # up to 10 s for a graceful exit, then SIGKILL
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.2
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
on_signal() {
  trap - INT TERM
  echo
  echo ">> stopping specrec-serve and specrec-worker"
  stop_children
  exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap stop_children EXIT

specrec-worker &
worker_pid=$!
specrec-serve &
serve_pid=$!

base="http://$HOST:$PORT"
ready=0
for _ in $(seq 1 "$((${READY_TIMEOUT_S:-600} * 2))"); do
  kill -0 "$serve_pid" 2>/dev/null || break
  kill -0 "$worker_pid" 2>/dev/null || break
  if python - "$base/readyz" <<'PY' 2>/dev/null; then
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
PY
    ready=1
    break
  fi
  sleep 0.5
done

if [ "$ready" -eq 1 ]; then
  cat <<EOF
==============================================================================
 specrec is up (API pid $serve_pid, worker pid $worker_pid). Try:

   curl '$base/recommend/user_0?k=20'
   curl '$base/health/spectrum'
   open  $base/docs

 Ctrl-C stops both processes.
==============================================================================
EOF
else
  echo "run.sh: the API did not become ready on $base/readyz; see the log above" >&2
fi

# Whichever process ends first (or a signal) ends the run: one without the other is not specrec.
set +e
wait -n
rc=$?
set -e
if kill -0 "$serve_pid" 2>/dev/null; then
  echo "run.sh: specrec-worker exited (status $rc); stopping the API" >&2
else
  echo "run.sh: specrec-serve exited (status $rc); stopping the worker" >&2
fi
exit "$rc"
