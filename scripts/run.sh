#!/usr/bin/env bash
# Run specrec without Docker: the same two processes as docker-compose.yml.
#
#   1. bootstrap (foreground, once): the synthetic default dataset and a default model, each only
#      when missing, so a second run skips straight to 2;
#   2. specrec-worker, the training worker that runs POST /retrain jobs, and
#   3. specrec-serve, the API on HOST:PORT, both under supervisord (scripts/supervisord.conf),
#      which starts either one again when it exits or is killed, until Ctrl-C stops both.
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
for cmd in python specrec-worker specrec-serve supervisord; do
  command -v "$cmd" >/dev/null 2>&1 || {
    echo "run.sh: '$cmd' not found on PATH; use 'make run' (it creates .venv and installs specrec)" >&2
    exit 1
  }
done

# Where things live and where the API listens, asked of the settings themselves (each defined
# once: contract/settings.py, contract/layout.py, service/settings.py) for this environment:
# SPECREC_HOME (absolute), models_dir, default_data, HOST, PORT.
launch_env="$(python -m service.settings)" || exit 2
eval "$launch_env"
export SPECREC_HOME HOST PORT
mkdir -p "$SPECREC_HOME"

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
if [ -f "$models_dir/CURRENT" ] && [ -f "$default_data/interactions.csv" ]; then
  echo ">> reusing the published model in $models_dir"
else
  echo ">> first run: building the default dataset and model in $SPECREC_HOME (CPU, once)"
  started=$SECONDS
  specrec-worker --bootstrap-only
  echo ">> bootstrap done in $((SECONDS - started)) s"
fi

# --- 2 + 3. API and worker under supervisord until interrupted ------------------------------
# scripts/supervisord.conf restarts whichever of the two exits or is killed; the other goes on.
mkdir -p "$SPECREC_HOME/run"
sup_args=(-c scripts/supervisord.conf)
# as root, say so (supervisord otherwise logs a CRIT line about not dropping privileges)
[ "$(id -u)" -eq 0 ] && sup_args+=(-u root)
# In a session of its own: the terminal's signals (Ctrl-C's SIGINT, the SIGHUP of a closed
# window) reach this script, which stops supervisord with SIGTERM below. supervisord itself would
# take SIGHUP as "reload and restart everything" and, its terminal gone, could die leaving the
# API and the worker running.
setsid supervisord "${sup_args[@]}" &
sup_pid=$!

tty_watch=""
session_pids() {  # supervisord's session: it and all it started, even once it is gone (/proc)
  local stat pid rest
  for stat in /proc/[0-9]*/stat; do
    pid="${stat#/proc/}"; pid="${pid%/stat}"
    { read -r rest <"$stat"; } 2>/dev/null || continue
    rest="${rest##*) }"  # after "pid (comm) ": state ppid pgrp session ...
    # shellcheck disable=SC2086
    set -- $rest
    if [ "${4:-}" = "$sup_pid" ] && [ "${1:-}" != Z ]; then echo "$pid"; fi
  done
  return 0
}
stop_supervisor() {
  if [ -n "$tty_watch" ]; then kill "$tty_watch" 2>/dev/null || true; fi
  local pid left
  if kill -0 "$sup_pid" 2>/dev/null; then
    kill -TERM "$sup_pid" 2>/dev/null || true
    wait "$sup_pid" 2>/dev/null || true
  fi
  # supervisord stops both programs; should it die instead (after a hangup its writes to the
  # closed terminal fail), stop what is left of its session: SIGTERM, SIGKILL after 20 s
  # (supervisord's own stopwaitsecs are 10 and 15 s)
  left="$(session_pids)"
  [ -z "$left" ] && return 0
  for pid in $left; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 40); do
    [ -z "$(session_pids)" ] && return 0
    sleep 0.5
  done
  for pid in $(session_pids); do kill -KILL "$pid" 2>/dev/null || true; done
}
on_signal() {
  # ignore further signals while stopping: a closed terminal can deliver SIGHUP twice (the
  # terminal's and the watcher's below), and the default action would end this script with the
  # programs still running
  trap '' INT TERM HUP
  # (after a hangup the terminal is gone and echo fails: stop the processes all the same)
  { echo; echo ">> stopping specrec-serve and specrec-worker"; } 2>/dev/null || true
  stop_supervisor
  exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP
trap stop_supervisor EXIT

# A closed terminal sends SIGHUP to its session leader: from an interactive shell that reaches
# this script too, but when make itself leads the session (`tmux new 'make run'`, `script -c`)
# only make gets it, and make then waits for this script forever. So, at a terminal, watch it
# and stop as on SIGHUP once it is gone.
if { : </dev/tty; } 2>/dev/null; then
  ( while { : </dev/tty; } 2>/dev/null; do sleep 1; done; kill -HUP $$ 2>/dev/null ) &
  tty_watch=$!
fi

base="http://$HOST:$PORT"
ready=0
for _ in $(seq 1 "$((${READY_TIMEOUT_S:-600} * 2))"); do
  kill -0 "$sup_pid" 2>/dev/null || break
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
 specrec is up (supervisord pid $sup_pid runs the API and the worker). Try:

   open  $base/              (the operator page: model, spectrum, jobs, playground)
   curl '$base/recommend/user_0?k=20'
   curl '$base/health/spectrum'
   open  $base/docs          (the API, offline)

 A process that exits or is killed is started again; the other keeps running.
 Ctrl-C (or closing this terminal) stops both processes.
==============================================================================
EOF
else
  echo "run.sh: the API did not become ready on $base/readyz; see the log above" >&2
fi

# supervisord ends only on a signal (Ctrl-C / SIGTERM, handled above) or a failure of its own.
set +e
wait "$sup_pid"
rc=$?
set -e
echo "run.sh: supervisord exited (status $rc)" >&2
exit "$rc"
