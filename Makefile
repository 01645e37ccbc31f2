# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-hub-old install install-dev migrate demo check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

migrate: install
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py load_demo

# Every work queue of portal/settings.py (CELERY_TASK_ROUTES): one worker here runs them all, the
# CPU inference queue included (the demo checkpoint is tiny); "inference-gpu" is for GPU machines.
QUEUES := celery,builds,publishing,mail,periodic,inference

# Web server, Celery worker and the periodic scheduler. Ctrl-C, or a SIGTERM to the process
# group as a supervisor sends, stops all three within seconds. The worker runs in a session of
# its own and is told to stop by this shell alone: pool processes signalled directly, beside
# their parent, leave its shutdown hanging. It stops cold (REMAP_SIGTERM) rather than waiting
# for a day-long build: tasks are acknowledged late, and builds and publishes are taken over
# once their heartbeat goes quiet. Whatever of the worker's session is still there 6 s later (a pool
# process busy in a model pass) is killed: its jobs go back to the queue when their lease expires.
# Links in e-mails point at this server unless PORTAL_BASE_URL names another address.
run: export PORTAL_BASE_URL ?= http://$(HOST):$(PORT)
run: demo
	@echo "Portal on http://$(HOST):$(PORT)/  (Ctrl-C stops the site, the worker and the scheduler)"
	@REMAP_SIGTERM=SIGQUIT setsid $(BIN)/celery -A portal worker -Q $(QUEUES) --loglevel=INFO --concurrency=2 & worker=$$!; \
	$(BIN)/celery -A portal beat --loglevel=INFO & beat=$$!; \
	trap 'kill $$worker $$beat 2>/dev/null; for i in 1 2 3 4 5 6; do kill -0 $$worker 2>/dev/null || break; sleep 1; done; \
	      kill -KILL -$$worker 2>/dev/null; wait' INT TERM EXIT; \
	$(BIN)/python manage.py runserver --noreload $(HOST):$(PORT)

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The Hub protocol's tests again, with the clients of requirements-hub-old.txt in a virtualenv of their own
# (HUB_CLIENT_PYTHON); the portal they talk to runs in .venv as always.
HUB_OLD := .venv-hub-old
$(HUB_OLD)/.installed: requirements-hub-old.txt
	$(PYTHON) -m venv $(HUB_OLD)
	$(HUB_OLD)/bin/pip install -q --upgrade pip
	$(HUB_OLD)/bin/pip install -q -r requirements-hub-old.txt
	touch $@

test-hub-old: install-dev $(HUB_OLD)/.installed
	HUB_CLIENT_PYTHON=$(CURDIR)/$(HUB_OLD)/bin/python $(BIN)/python -m pytest $(PYTEST_ARGS) tests/datasets_app/test_hub_clients.py \
		tests/datasets_app/test_hub_datasets.py tests/datasets_app/test_hub_s3.py

# ruff (ruff.toml: undefined and unused names, not style), then Django's system checks.
check: install-dev
	$(BIN)/ruff check .
	$(BIN)/python manage.py check

clean:
	rm -rf var/ .pytest_cache/ $(HUB_OLD)/
