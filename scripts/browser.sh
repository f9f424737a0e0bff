#!/usr/bin/env bash
# Make sure headless Chromium is there for the dashboard test
# (tests/test_http_browser.py): Debian's `chromium`, installed quietly when
# it is missing and this runs as root with apt-get.  Anywhere else it does
# nothing, and the test skips saying why.  Never fails the caller.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/browser.sh: no chromium, and not root with apt-get: the browser test will skip" >&2
    exit 0
fi
echo "== installing chromium for the dashboard test"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq chromium >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq chromium >/dev/null 2>&1 \
        || echo "scripts/browser.sh: apt-get install chromium failed: the browser test will skip" >&2
fi
exit 0
