#!/usr/bin/env bash
# The test command: set up .venv, check lint, format and types, run the test
# suite.  .ci/run calls this.  Arguments go to pytest; with arguments (a
# file, -k, -m slow ...) only pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh "test,agent,top,metrics,http"
scripts/browser.sh
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba_cache}"
if [ "$#" -eq 0 ]; then
    echo "== ruff check, ruff format --check, mypy"
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/mypy
fi
set +e
.venv/bin/python -m pytest -q --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: treating as failure" >&2
    exit 1
fi
exit "$rc"
