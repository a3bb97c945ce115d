#!/usr/bin/env bash
# Mutation testing of the guards (`make mutation`): mutmut, set up in pyproject.toml's [tool.mutmut], changes
# services/auth.py, services/records.py, services/diagnosis.py and models/evaluation/ood.py one small edit at a
# time (a `<` made `<=`, a check left out, a number changed) in a copy of the project under mutants/, and runs the
# tests that reach the edited code. A mutant the tests notice is "killed"; one they pass anyway "survived", and
# points at behaviour no test pins. Runs at low priority; mutants/ keeps the results, so a second run retests
# only what changed. MUTATION_JOBS sets how many mutants run at once (default: one per core).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh dev
scripts/ensure_redis.sh
if [ ! -x .venv/bin/mutmut ]; then
    echo "mutmut is not installed in .venv: it comes with requirements-dev.lock (scripts/lock.sh)" >&2
    exit 1
fi
nice -n 19 .venv/bin/mutmut run --max-children "${MUTATION_JOBS:-$(nproc)}"
.venv/bin/mutmut export-cicd-stats >/dev/null
echo
echo "Mutants the tests passed anyway (see one with: .venv/bin/mutmut show NAME):"
.venv/bin/mutmut results | grep -v ': no tests$' || true
.venv/bin/python - <<'PY'
import json

s = json.load(open("mutants/mutmut-cicd-stats.json"))
score = 100 * s["killed"] / s["total"] if s["total"] else 0.0
print(
    f"\nMutation score: {s['killed']} of {s['total']} mutants killed ({score:.1f} %); {s['survived']} survived, "
    f"{s['no_tests']} reached by no test, {s['timeout']} timed out, {s['suspicious']} suspicious."
)
PY
