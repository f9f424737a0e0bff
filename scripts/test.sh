#!/usr/bin/env bash
# The test command: set up .venv and run the test suite.  .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh "test,agent,top,metrics"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba_cache}"
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: treating as failure" >&2
    exit 1
fi
exit "$rc"
