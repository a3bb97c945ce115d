#!/usr/bin/env bash
# Run the whole test suite with everything it needs: the venv with the dev lock, Redis, and (as root)
# Debian's chromium for the browser tests and the hospital imaging parts for the DICOM tests (Orthanc with its
# DICOMweb plugin, DCMTK, dicom3tools); tests skip themselves when these are not there. ruff's lint and format
# checks run first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh dev
scripts/ensure_redis.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    echo "installing chromium for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || echo "chromium could not be installed; the browser tests will skip"
fi
missing=()
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
command -v storescu >/dev/null 2>&1 || missing+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
    echo "installing ${missing[*]} for the DICOM tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || echo "${missing[*]} could not be installed; the DICOM tests will skip"
fi
echo "ruff: lint and format check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Both cores (TEST_WORKERS=0 runs in one process); each test module stays whole on one worker, the browser
# tests together (tests/conftest.py).
exec .venv/bin/pytest -n "${TEST_WORKERS:-2}" "$@"
