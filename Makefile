# The two commands that matter: `make setup` (fresh machine -> everything
# installed) and `make test` (the whole suite). See README.md and docs/.
.PHONY: setup test checks lock upgrade typecheck docs unit integration up down up-swiss down-swiss status bench bench-load bench-dashboard bench-training bench-telemetry bench-onboarding bench-forecasting bench-real bench-cold bench-fuzz bench-faults soak lint images bench-compose test-compose

PY := .venv/bin/python
# MkDocs 1.x, quiet about its successors' notices.
MKDOCS := NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(PY) -m mkdocs

setup:
	bash scripts/setup.sh

# The whole suite, then the forecast path again on Google Cloud Pub/Sub
# (its emulator) in a session and stack of its own (tests/gcp), started as a
# first `make up` is: it trains and serves a model first; then a user's own
# fleet (tests/own_fleet: the registry, weather, the Swiss heat pumps live)
# on a stack without the demo fleet; workload certificates that live a
# minute (tests/certs); network faults through Toxiproxy (tests/network);
# two forecasters and gateways (tests/replicas); last, the images built and
# docker-compose.yml run with them by podman (test-compose). The chart
# applied to a real Kubernetes API server, and Dapr's sidecar injector
# against it (tests/kubernetes), are in the first session.
test: checks
	$(PY) -m pytest -q
	INTRADAY_COMPONENTS=gcp-emulated INTRADAY_FIRST_MODEL=on $(PY) -m pytest -q tests/gcp
	INTRADAY_DEMO_FLEET=off $(PY) -m pytest -q tests/own_fleet
	INTRADAY_WORKLOAD_CERT_TTL=60s $(PY) -m pytest -q tests/certs
	INTRADAY_TOXIPROXY=on $(PY) -m pytest -q tests/network
	INTRADAY_REPLICAS=2 $(PY) -m pytest -q tests/replicas
	$(MAKE) --no-print-directory test-compose

# The images built (cached after the first time), then docker-compose.yml
# run with them by podman, up from nothing and down to nothing (tests/compose).
test-compose:
	bash scripts/images.sh
	INTRADAY_COMPOSE=on $(PY) -m pytest -q tests/compose

# Every target of the Dockerfile built with podman, and the images the
# compose override runs where nothing can be pulled (scripts/images.sh;
# base images made here once, then cached). IMAGES="app dapr" for some.
images:
	bash scripts/images.sh $(IMAGES)

# What holds the build together, before the suite: the locks match
# pyproject.toml; the type checker is clean (intraday/ strict, the rest in
# mypy's default mode; pyproject.toml [tool.mypy]); the docs site builds
# with no broken link and its reference pages generate from the code.
checks:
	bash scripts/lock.sh check
	$(PY) -m mypy
	$(MKDOCS) build --strict --quiet --site-dir .data/site

# After editing pyproject.toml's dependencies: the locks follow, every other
# pin kept. `make upgrade`: every package to its newest allowed release.
lock:
	bash scripts/lock.sh
upgrade:
	bash scripts/lock.sh upgrade

typecheck:
	$(PY) -m mypy

# The docs site on http://127.0.0.1:8008, rebuilt as the pages change.
docs:
	$(MKDOCS) serve --dev-addr 127.0.0.1:8008

unit:
	$(PY) -m pytest -q -m "not integration"

integration:
	$(PY) -m pytest -q -m integration

up:
	bash scripts/stack.sh up

down:
	bash scripts/stack.sh down

# The real Swiss heat pumps instead of the demo fleet (../shared/data), in
# .data/swiss: imported as a replay ending now, a model trained on them.
up-swiss:
	bash scripts/up_swiss.sh

down-swiss:
	INTRADAY_DATA_DIR=$(CURDIR)/.data/swiss bash scripts/stack.sh down

status:
	bash scripts/stack.sh status

bench:
	$(PY) bench/e2e_latency.py

# The seed's load tests at fleet size (starts its own 10,000-device stack in
# .data/load unless one is running; about 15 minutes).
bench-load:
	$(PY) bench/load.py

bench-dashboard:
	$(PY) bench/dashboard.py

bench-training:
	$(PY) bench/training.py

bench-telemetry:
	$(PY) bench/telemetry.py

# intraday import of the 537 Swiss households (stack down, then into a
# running stack of its own); needs ../shared/data/swiss-households.
bench-onboarding:
	$(PY) bench/onboarding.py

bench-forecasting:
	$(PY) bench/forecasting.py

# The engine on real meters: the Swiss households (../shared/data), heat
# pumps and others as two portfolios; bench/results/real.json.
bench-real:
	$(PY) bench/forecasting.py --part real

# The first week colder than a late-summer fleet's history, and a 6 K snap
# beyond it; bench/results/cold.json.
bench-cold:
	$(PY) bench/forecasting.py --part cold

# The gateway fuzzed from its OpenAPI schema, 1,000 cases per operation, on a
# stack of its own (stop `make up` first).
bench-faults:
	$(PY) bench/faults.py

# The churn soak (bench/soak.py): an hour of traffic under a fault loop; MINUTES=10 for a short one,
# REPLICAS=2 for two forecasters and gateways behind the soak's balancer.
soak:
	$(PY) bench/soak.py --minutes $(or $(MINUTES),60) --replicas $(or $(REPLICAS),1)

# The images built, docker-compose.yml up with podman, time to healthy and
# the first forecasts through it (bench/compose.py; COLD=1 rebuilds every layer).
bench-compose:
	$(PY) bench/compose.py $(if $(COLD),--cold)

bench-fuzz:
	$(PY) bench/fuzz.py

lint:
	.venv/bin/ruff check .
