#!/usr/bin/env bash
# The main job: set up .venv and run the demo (a real engine and a simulated
# fleet pushing heartbeats through ZeroMQ, with a live view and the web
# dashboard, whose URL it prints).  Ctrl-C stops it;
# arguments go to `shm-engine demo` (e.g. --duration 20 --nodes 500).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh "top,agent,http"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba_cache}"
exec .venv/bin/shm-engine demo "$@"
