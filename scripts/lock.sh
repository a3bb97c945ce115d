#!/usr/bin/env bash
# Resolve requirements.txt and requirements-dev.txt into lock files that pin every transitive version.
# Nothing is installed: pip resolves in a dry run and reports what it would install.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh dev
for name in requirements requirements-dev; do
    report="$(mktemp)"
    .venv/bin/python -m pip install --quiet --dry-run --ignore-installed --report "$report" -r "$name.txt"
    .venv/bin/python - "$report" "$name" <<'PY'
import json
import sys

report, name = sys.argv[1:]
pins = sorted((item["metadata"]["name"].lower(), item["metadata"]["version"]) for item in json.load(open(report))["install"])
with open(f"{name}.lock", "w") as out:
    out.write(f"# Every package {name}.txt needs, transitive ones included, at the versions tested together.\n")
    out.write(f"# Regenerate after changing {name}.txt: scripts/lock.sh\n")
    # A local version label (+cpu) names the wheel this machine had, not the release: pin the release.
    out.writelines(f"{pkg}=={version.split('+')[0]}\n" for pkg, version in pins)
PY
    rm -f "$report"
done
