#!/usr/bin/env bash
# Create (or reuse) .venv and install shm-engine with the extras named in $1.
# Used by scripts/test.sh, scripts/demo.sh and .ci/run, so they cannot drift.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
python3 -c 'import sys; assert sys.version_info >= (3, 11), "shm-engine needs Python >= 3.11"'
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
