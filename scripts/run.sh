#!/usr/bin/env bash
# Start the whole system: install, migrate, Redis, one Celery worker with Celery beat inside it (-B, the
# periodic sweep; the same command as `make worker`), the DICOM listener (DICOM_PORT, default 11112) and the app
# (server.py: Streamlit behind its session check) on :8501.
# Ctrl-C stops the worker and the app (Redis, if started here, keeps running for the next start).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh
.venv/bin/python -m services.bootstrap
scripts/ensure_redis.sh --persistent

pids=()
stop() {
    trap - INT TERM EXIT
    if [ "${#pids[@]}" -gt 0 ]; then
        echo "stopping the worker, the DICOM listener and the app"
        # TERM lets the worker finish its current task (warm shutdown); a second Ctrl-C forces it.
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
}
trap stop INT TERM EXIT

.venv/bin/celery -A worker.celery_app worker -B -Q training,prediction -n "worker@%h" --loglevel INFO &
pids+=("$!")
.venv/bin/python -m worker.dicom_listener &
pids+=("$!")
.venv/bin/python server.py --port 8501 &
pids+=("$!")
echo "the app is at http://127.0.0.1:8501 (Ctrl-C stops everything)"

# When any process exits on its own, stop the others: half a system is worse than none.
status=0
wait -n "${pids[@]}" || status=$?
exit "$status"
