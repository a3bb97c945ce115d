#!/usr/bin/env bash
# Create .venv with Python 3.11+ and install the locked requirements into it: requirements.lock (what the
# app runs), or with `dev` requirements-dev.lock (plus tests, linting, the browser driver). Only when the
# lock changed since its last successful install: a hash stamp makes re-runs take a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
LOCK=requirements.lock
[ "${1:-}" = "dev" ] && LOCK=requirements-dev.lock
STAMP="$VENV/.$LOCK.sha256"

python_for_venv() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "Python 3.11 or newer is needed (python3 -m venv); install it, e.g. apt-get install python3 python3-venv" >&2
    exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "$(python_for_venv)" -m venv "$VENV"
fi

wanted="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$wanted" ]; then
    echo "installing $LOCK into $VENV"
    "$VENV/bin/python" -m pip install --quiet -r "$LOCK"
    echo "$wanted" > "$STAMP"
fi
