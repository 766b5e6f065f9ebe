# syntax=docker/dockerfile:1.7
# One image for the four services (the role is the command:
# `python -m services.gateway|forecaster|telemetry|trading`), built in stages:
#   app             every service; no compiler. Telemetry talks to a ClickHouse
#                   server (INTRADAY_TELEMETRY_BACKEND=clickhouse), so chDB,
#                   the embedded ClickHouse (540 MB), is left out
#   forecaster      app + gcc, with which treelite/tl2cgen (in the locked set)
#                   compile the served model's trees at load
#                   (intraday/forecasting/compiled.py)
#   telemetry-chdb  app + chDB: telemetry with its data in the container's
#                   volume, where no ClickHouse server runs (the podman
#                   override, deploy/podman/compose.local.yml)
#   dapr            Dapr's daprd, sentry, placement and scheduler; daprd behind
#                   an entry that reads Sentry's trust anchors from a file (daprd
#                   takes them from its environment only)
# Non-root (uid 10001); data under /data. Test suites are not installed
# (the packages' own `tests` directories are removed: 150 MB).
#
# Builds where pip needs a CA of the host's (a TLS-inspecting proxy) take it
# as a build secret, never a layer: `--secret id=ca-bundle,src=<bundle>`
# (scripts/images.sh passes the host's).
ARG PYTHON_VERSION=3.11
ARG DAPR_VERSION=1.18.2

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv
WORKDIR /app
# Dependencies first (cached while only the code changes): exactly the
# locked set, hashes checked (requirements.lock, scripts/lock.sh); then the code.
# chDB's pins (chdb, chdb-core, with their hashes) go to a lock of their own
# for `telemetry-chdb`.
COPY requirements.lock ./
RUN mkdir /locks \
    && awk '/^chdb(-core)?==/ {skip = 1} !skip {print} skip && !/\\$/ {skip = 0}' requirements.lock \
       >/locks/app.lock \
    && awk '/^chdb(-core)?==/ {keep = 1} keep {print} keep && !/\\$/ {keep = 0}' requirements.lock \
       >/locks/chdb.lock \
    && [ "$(grep -c '^chdb' /locks/chdb.lock)" = 2 ] && ! grep -q '^chdb' /locks/app.lock
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    /venv/bin/pip install --require-hashes --no-deps -r /locks/app.lock \
    && find /venv/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +
COPY pyproject.toml README.md ./
COPY intraday intraday
COPY clients clients
COPY services services
COPY actors actors
COPY workflows workflows
COPY sql sql
# Editable: the code runs from /app, where it finds sql/ beside it.
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    /venv/bin/pip install --no-deps -e .

FROM python:${PYTHON_VERSION}-slim-bookworm AS app
# libgomp1: LightGBM's OpenMP runtime (the wheel links it, the slim image lacks it).
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin intraday \
    && mkdir -p /data && chown 10001 /data
COPY --from=build /venv /venv
COPY --from=build /app /app
WORKDIR /app
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 INTRADAY_DATA_DIR=/data
USER 10001
EXPOSE 8000
CMD ["python", "-m", "services.gateway"]

FROM app AS forecaster
USER root
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
USER 10001
EXPOSE 8001
CMD ["python", "-m", "services.forecaster"]

FROM app AS telemetry-chdb
USER root
COPY --from=build /locks/chdb.lock /tmp/chdb.lock
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    PIP_NO_CACHE_DIR=1 pip install --require-hashes --no-deps -r /tmp/chdb.lock && rm /tmp/chdb.lock
USER 10001
ENV INTRADAY_TELEMETRY_BACKEND=chdb
EXPOSE 8002
CMD ["python", "-m", "services.telemetry"]

FROM daprio/daprd:${DAPR_VERSION} AS daprd-release
FROM daprio/sentry:${DAPR_VERSION} AS sentry-release
FROM daprio/placement:${DAPR_VERSION} AS placement-release
FROM daprio/scheduler:${DAPR_VERSION} AS scheduler-release

# Dapr's binaries (the release images' own), on a base with a shell and curl
# for the health checks; daprd behind the entry that reads the trust anchors.
FROM debian:bookworm-slim AS dapr
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /certs /var/lib/dapr/scheduler && chown 10001 /certs /var/lib/dapr/scheduler
COPY --from=daprd-release /daprd /usr/local/bin/daprd
COPY --from=sentry-release /sentry /usr/local/bin/sentry
COPY --from=placement-release /placement /usr/local/bin/placement
COPY --from=scheduler-release /scheduler /usr/local/bin/scheduler
COPY scripts/daprd-entry.sh /usr/local/bin/daprd-entry.sh
USER 10001
ENTRYPOINT ["/usr/local/bin/daprd-entry.sh"]
