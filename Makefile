# `make run` starts everything, `make test` runs every test; both install what they need first.
.PHONY: run test install migrate admin worker app redis bench lock

VENV := .venv

run:
	@scripts/run.sh

test:
	@scripts/test.sh

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
	$(VENV)/bin/streamlit run Home.py --server.port 8501 --server.headless true --server.fileWatcherType auto

lock:
	@scripts/lock.sh

bench: install
	$(VENV)/bin/python -m scripts.benchmark
