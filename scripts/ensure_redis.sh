#!/usr/bin/env bash
# Make sure Redis answers at REDIS_URL (from settings): use one that answers; else start a local
# redis-server (installing Debian's package first when it is missing and we are root); else say what to do.
# With --persistent (what `make run` asks) the local Redis keeps its queue in var/redis (append-only file),
# so queued jobs survive a restart of Redis; the tests run a throw-away one.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
url="$("$PY" -c 'from settings import get_settings; print(get_settings().redis_url)')"

answers() {
    "$PY" - "$url" <<'PY' >/dev/null 2>&1
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2, socket_timeout=2).ping()
PY
}

if answers; then
    exit 0
fi

read -r host port <<<"$("$PY" -c 'import sys; from urllib.parse import urlsplit; u = urlsplit(sys.argv[1]); print(u.hostname or "127.0.0.1", u.port or 6379)' "$url")"
if [ "$host" != "127.0.0.1" ] && [ "$host" != "localhost" ]; then
    echo "Redis does not answer at $host:$port (REDIS_URL). Start it there, or point REDIS_URL at a running Redis." >&2
    exit 1
fi

if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "Redis does not answer at $host:$port and redis-server is not installed." >&2
        echo "Fix: sudo apt-get install -y redis-server (then re-run), or set REDIS_URL to a running Redis." >&2
        exit 1
    fi
    echo "installing redis-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

echo "starting redis-server on 127.0.0.1:$port"
if [ "${1:-}" = "--persistent" ]; then
    mkdir -p var/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly yes --dir "$PWD/var/redis" >/dev/null
else
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no >/dev/null
fi
for _ in $(seq 1 50); do
    if answers; then
        exit 0
    fi
    sleep 0.2
done
echo "redis-server was started but does not answer at 127.0.0.1:$port; see its log (redis-server --help)." >&2
exit 1
