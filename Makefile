# `make run` starts everything, `make test` runs every test; both install what they need first.
.PHONY: run test test-fast mutation install migrate admin worker app dicom-listener redis bench lock audit-verify

VENV := .venv

run:
	@scripts/run.sh

test:
	@scripts/test.sh

# The tests that take under a few seconds each: no real worker process, browser or training run.
test-fast:
	@scripts/test.sh -m "not slow"

# Mutation testing of the guards (sign-in and roles, patient deletes and merges, the review rule, the brain-MRI
# check): scripts/mutation.sh says how, and prints the score at the end.
mutation:
	@scripts/mutation.sh

install:
	@scripts/install.sh

migrate: install
	$(VENV)/bin/python -m services.bootstrap

# The first admin (and later ones): asks for the password. `make admin NAME=alice`
admin: migrate
	@test -n "$(NAME)" || { echo "usage: make admin NAME=yourname"; exit 2; }
	$(VENV)/bin/python -m db.users create-admin "$(NAME)"

redis: install
	@scripts/ensure_redis.sh --persistent

# Beat runs inside the worker (-B): the sweep that recovers the jobs of dead workers and the queued jobs Redis
# lost runs wherever a worker runs, as in `make run` and docker-compose.yml.
worker: install redis
	$(VENV)/bin/celery -A worker.celery_app worker -B -Q training,prediction -n "worker@%h" --loglevel INFO

app: install
	$(VENV)/bin/python server.py --port 8501 --watch

# The DICOM listener (C-STORE SCP) on DICOM_PORT as DICOM_AE_TITLE; `make run` starts it beside the worker.
dicom-listener: migrate
	$(VENV)/bin/python -m worker.dicom_listener

# Check the audit log's hash chain: names the first entry changed, removed or slipped in.
audit-verify: install
	$(VENV)/bin/python -m db.audit verify

lock:
	@scripts/lock.sh

bench: install
	$(VENV)/bin/python -m scripts.benchmark
