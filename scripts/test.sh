#!/usr/bin/env bash
# Run the whole test suite with everything it needs: the venv with the dev lock, Redis, and (as root)
# Debian's chromium for the browser tests, which skip themselves when no browser is there. ruff's lint and
# format checks run first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh dev
scripts/ensure_redis.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    echo "installing chromium for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || echo "chromium could not be installed; the browser tests will skip"
fi
echo "ruff: lint and format check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest "$@"
