#!/usr/bin/env bash
# Run the whole test suite with everything it needs: the venv, Redis, and (as root) Debian's chromium
# for the browser tests, which skip themselves when no browser is there.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
scripts/ensure_redis.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    echo "installing chromium for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || echo "chromium could not be installed; the browser tests will skip"
fi
exec .venv/bin/pytest "$@"
