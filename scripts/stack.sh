#!/usr/bin/env bash
# The local stack: `stack.sh up` starts Redis, PostgreSQL, Dapr placement and
# scheduler, applies the audit schema, loads the demo fleet when the telemetry
# store is empty, then runs the services with `dapr run -f dapr.yaml` and
# returns once every service and sidecar answers its health check.
# `stack.sh down` stops everything and leaves the data on disk;
# `stack.sh status` tells what runs; `stack.sh start redis|postgres` starts one
# backing store again, as `up` does (the fault suite restarts them).
#
# Zipkin (in memory) takes every sidecar's traces on 127.0.0.1:9411;
# Prometheus scrapes every sidecar and app on 127.0.0.1:9090.
#
# INTRADAY_COMPONENTS=gcp-emulated swaps pub/sub for Google Cloud Pub/Sub by
# YAML only: components/gcp/pubsub.yaml pointed at the Pub/Sub emulator of
# the Google Cloud CLI (127.0.0.1:8085, in memory), the other components
# local (deploy/gcp_emulated.py).
# INTRADAY_TOXIPROXY=on (tests/network) puts Toxiproxy (127.0.0.1:8474) on
# the links a network fault is injected into: every daprd to placement
# (:51005) and to the scheduler (:51006, which it also broadcasts), every
# daprd to Redis (:16379), every app to PostgreSQL (:15432), and the
# forecaster's daprd to its app (:18001); the processes are pointed at the
# proxies by a derived run file and components (run_file).
# INTRADAY_REPLICAS=N (2 to 4; tests/replicas) runs N forecaster and N
# gateway instances, as a deployment of N pods: replica k (from 2) on the
# ports of replica 1 plus 100(k-1) (forecaster app :8101, its sidecar
# :3601; gateway :8100, :3600), logging to the run's own log (apps.log).
# Everything lives under INTRADAY_DATA_DIR (default ./.data): redis/,
# postgres/, scheduler/, certs/ (Sentry's root and issuer), telemetry/ (chDB),
# logs/, run/ (pid files).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export INTRADAY_DATA_DIR="${INTRADAY_DATA_DIR:-$root/.data}"
data="$INTRADAY_DATA_DIR"
run="$data/run"
logs="$data/logs"
dapr_bin="${DAPR_HOME:-$HOME/.dapr}/bin"
redis_port="${INTRADAY_REDIS_PORT:-6379}"
pg_port="${INTRADAY_PG_PORT:-5432}"
placement_port=50005
scheduler_port=50006
sentry_port=50001  # where `dapr run` points daprd when the configuration enables mTLS
zipkin_port=9411
prometheus_port=9090
pubsub_emulator_port="${INTRADAY_PUBSUB_EMULATOR_PORT:-8085}"
toxiproxy="${INTRADAY_TOXIPROXY:-off}"
replicas="${INTRADAY_REPLICAS:-1}"
[[ "$replicas" =~ ^[1-4]$ ]] || { echo "[stack] error: INTRADAY_REPLICAS=$replicas: 1 to 4" >&2; exit 2; }
replicated=(forecaster gateway)  # the apps INTRADAY_REPLICAS multiplies
toxiproxy_port=8474
# name:listen port:upstream port (tests/network/toxics.py has the same)
proxies=(placement:51005:50005 scheduler:51006:50006 redis:16379:6379 postgres:15432:5432 forecaster-app:18001:8001)
components="${INTRADAY_COMPONENTS:-local}"
# name:app-port:sidecar-http-port, as in dapr.yaml
services=(telemetry:8002:3502 forecaster:8001:3501 trading:8003:3503 gateway:8000:3500)
for ((k = 2; k <= ${INTRADAY_REPLICAS:-1}; k++)); do  # INTRADAY_REPLICAS (below): replica k of each
  services+=("forecaster:$((8001 + 100 * (k - 1))):$((3501 + 100 * (k - 1)))"
             "gateway:$((8000 + 100 * (k - 1))):$((3500 + 100 * (k - 1)))")
done
health_timeout="${INTRADAY_UP_TIMEOUT:-120}"

say() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
# PostgreSQL refuses to run as root; use the Debian package's system user.
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { [[ -f "$run/$1.pid" ]] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

wait_for() {  # wait_for DESCRIPTION SECONDS COMMAND...
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

redis_ready() { [[ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" == PONG ]]; }

start_redis() {
  if redis_ready; then say "redis already up on :$redis_port"; return; fi
  mkdir -p "$data/redis"
  # Append-only file: actor state and workflow histories survive a crash.
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$data/redis" \
    --appendonly yes --appendfsync everysec --daemonize yes \
    --pidfile "$run/redis.pid" --logfile "$logs/redis.log"
  # PONG, not just an answer: while it loads its append-only file Redis
  # answers LOADING, and a sidecar that connects then gives up.
  wait_for redis 120 redis_ready || die "redis did not start (see $logs/redis.log)"
  say "redis up on :$redis_port"
}

start_postgres() {
  local bin; bin="$(pg_bin)"; [[ -n "$bin" ]] || die "PostgreSQL is not installed: run make setup"
  local pgdata="$data/postgres"
  if [[ ! -s "$pgdata/PG_VERSION" ]]; then
    mkdir -p "$pgdata"
    [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$pgdata"
    as_pg "$bin/initdb" -D "$pgdata" -U intraday --auth=trust -E UTF8 >"$logs/initdb.log" 2>&1 \
      || die "initdb failed (see $logs/initdb.log)"
  fi
  if as_pg "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
    say "postgres already up"
  else
    touch "$logs/postgres.log"; [[ $(id -u) -eq 0 ]] && chown postgres "$logs/postgres.log"
    as_pg "$bin/pg_ctl" -D "$pgdata" -l "$logs/postgres.log" -w -t 60 \
      -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp" start >/dev/null \
      || die "postgres did not start (see $logs/postgres.log)"
  fi
  "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U intraday -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='intraday'" | grep -q 1 \
    || "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U intraday intraday
  say "postgres up on :$pg_port"
}

start_daemon() {  # start_daemon NAME COMMAND... (detached, pid in run/NAME.pid)
  local name=$1; shift
  if alive "$name"; then say "$name already up"; return; fi
  setsid nohup "$@" >"$logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$run/$name.pid"
}

zipkin_jar() { ls "${XDG_CACHE_HOME:-$HOME/.cache}"/intraday/zipkin/zipkin-server-*-slim.jar 2>/dev/null | sort -V | tail -n 1; }

# In memory, the newest MEM_MAX_SPANS spans: Zipkin's default (500,000)
# does not fit its 384 MB heap, and once a load run had sent about 700,000
# its JVM spent a whole core collecting garbage, idle stack or not (the
# CPU bench/load.py counts per process). 150,000 spans fitted until the
# requests carried more spans each (the gateway's shared rate limit, the
# run-started step): on 2026-12-07 a load run filled the heap again
# (OutOfMemoryError, 171 CPU seconds of Zipkin in 5 minutes, every latency
# tripled). Now 80,000 spans in 512 MB, and a JVM out of heap exits
# rather than thrash.
start_zipkin() {  # traces from every sidecar (components/config/local*.yaml), in memory
  # At a lower priority (nice 10): the collector (a managed service off these
  # cores in production) takes what serving leaves, not a share of it.
  if http_ok "http://127.0.0.1:$zipkin_port/health"; then say "zipkin already up on :$zipkin_port"; return; fi
  local jar; jar="$(zipkin_jar)"; [[ -n "$jar" ]] || die "the Zipkin server is not installed: run make setup"
  STORAGE_TYPE=mem MEM_MAX_SPANS="${INTRADAY_ZIPKIN_MAX_SPANS:-80000}" start_daemon zipkin nice -n 10 java -Xms64m -Xmx512m \
    -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -jar "$jar" \
    "--armeria.ports[0].port=$zipkin_port" --armeria.ports[0].ip=127.0.0.1 --armeria.ports[0].protocols[0]=http
  wait_for zipkin 90 http_ok "http://127.0.0.1:$zipkin_port/health" || die "zipkin did not start (see $logs/zipkin.log)"
  say "zipkin up on http://127.0.0.1:$zipkin_port"
}

pubsub_emulator_ready() { [[ "$(curl -fsS --max-time 2 "http://127.0.0.1:$pubsub_emulator_port/" 2>/dev/null)" == Ok* ]]; }

start_pubsub_emulator() {  # Google Cloud Pub/Sub, emulated (INTRADAY_COMPONENTS=gcp-emulated)
  if pubsub_emulator_ready; then say "pubsub emulator already up on :$pubsub_emulator_port"; return; fi
  command -v gcloud >/dev/null 2>&1 || die "INTRADAY_COMPONENTS=gcp-emulated needs the Google Cloud CLI (gcloud)"
  local emulator
  emulator="$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null)/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
  [[ -x "$emulator" ]] || die "the Pub/Sub emulator is not installed: gcloud components install pubsub-emulator"
  # The emulator itself, not `gcloud beta emulators pubsub start`: its Java
  # process is then the one in the pid file's process group.
  start_daemon pubsub-emulator "$emulator" --host=127.0.0.1 --port="$pubsub_emulator_port"
  wait_for "pubsub emulator" 60 pubsub_emulator_ready || die "the Pub/Sub emulator did not start (see $logs/pubsub-emulator.log)"
  say "pubsub emulator up on 127.0.0.1:$pubsub_emulator_port"
}

start_toxiproxy() {  # INTRADAY_TOXIPROXY=on: the proxies of the network faults
  [[ -x .venv/bin/toxiproxy-server ]] || die "Toxiproxy is not installed: run make setup"
  if ! http_ok "http://127.0.0.1:$toxiproxy_port/version"; then
    local p name listen upstream sep=""
    {
      printf '['
      for p in "${proxies[@]}"; do
        IFS=: read -r name listen upstream <<<"$p"
        # The app's proxy opens once the app answers (start_services): daprd
        # waits for its app port to listen, then asks the app for its actors once.
        printf '%s{"name": "%s", "listen": "127.0.0.1:%s", "upstream": "127.0.0.1:%s", "enabled": %s}' \
          "$sep" "$name" "$listen" "$upstream" "$([[ $name == *-app ]] && echo false || echo true)"
        sep=", "
      done
      printf ']\n'
    } >"$run/toxiproxy.json"
    start_daemon toxiproxy .venv/bin/toxiproxy-server -host 127.0.0.1 -port "$toxiproxy_port" \
      -config "$run/toxiproxy.json"
    wait_for toxiproxy 30 http_ok "http://127.0.0.1:$toxiproxy_port/version" \
      || die "toxiproxy did not start (see $logs/toxiproxy.log)"
  fi
  say "toxiproxy up on :$toxiproxy_port (${#proxies[@]} proxies)"
}

start_prometheus() {  # scrapes every sidecar, the control plane and the apps (observability/prometheus.yml)
  if http_ok "http://127.0.0.1:$prometheus_port/-/ready"; then say "prometheus already up on :$prometheus_port"; return; fi
  command -v prometheus >/dev/null 2>&1 || die "Prometheus is not installed: run make setup"
  mkdir -p "$data/prometheus"
  start_daemon prometheus prometheus --config.file=observability/prometheus.yml \
    --storage.tsdb.path="$data/prometheus" --storage.tsdb.retention.time=2d \
    --web.listen-address="127.0.0.1:$prometheus_port" --web.enable-lifecycle
  wait_for prometheus 60 http_ok "http://127.0.0.1:$prometheus_port/-/ready" \
    || die "prometheus did not start (see $logs/prometheus.log)"
  say "prometheus up on http://127.0.0.1:$prometheus_port"
}

# mTLS everywhere Dapr talks to Dapr: Sentry is the certificate authority
# (a self-signed root and issuer made on first start in $data/certs), and
# placement, scheduler and every daprd (components/config/local.yaml turns
# mTLS on; `dapr run` then points daprd at Sentry on localhost:50001) get
# their workload certificates from it. Service invocation is then allowed
# per calling app's identity (accessControl in the same configuration).
start_sentry() {
  mkdir -p "$data/certs"
  local fresh=0; [[ -s "$data/certs/ca.crt" ]] || fresh=1
  # INTRADAY_WORKLOAD_CERT_TTL (e.g. 90s; tests/certs): workload certificates
  # that short-lived, and backdated by 5 s rather than 15 min, so that
  # renewal (at half their life) and expiry come within minutes.
  local config=components/config/sentry.yaml
  if [[ -n "${INTRADAY_WORKLOAD_CERT_TTL:-}" ]]; then
    config="$run/sentry.yaml"
    sed -e "s|workloadCertTTL: .*|workloadCertTTL: \"$INTRADAY_WORKLOAD_CERT_TTL\"|" \
        -e 's|allowedClockSkew: .*|allowedClockSkew: "5s"|' components/config/sentry.yaml >"$config"
  fi
  start_daemon sentry "$dapr_bin/sentry" --issuer-credentials "$data/certs" --trust-domain localhost \
    --port "$sentry_port" --listen-address 127.0.0.1 --healthz-port 58083 --metrics-port 59093 \
    --config "$config" --log-level warn
  wait_for sentry 30 http_ok http://127.0.0.1:58083/healthz || die "sentry unhealthy (see $logs/sentry.log)"
  # A new root makes Sentry reload its credentials, once per file it wrote,
  # two seconds apart: wait until that settles.
  if ((fresh)); then
    local seen=-1 now
    for _ in $(seq 30); do
      now="$(grep -c reloading "$logs/sentry.log" || true)"
      [[ "$now" == "$seen" ]] && break
      seen="$now"; sleep 2.5
    done
    wait_for sentry 30 http_ok http://127.0.0.1:58083/healthz || die "sentry unhealthy"
  fi
  [[ -s "$data/certs/ca.crt" ]] || die "sentry made no trust anchors in $data/certs (see $logs/sentry.log)"
}

start_dapr_control_plane() {
  local tls=() mode="plain: INTRADAY_MTLS=off"
  if [[ "${INTRADAY_MTLS:-on}" != off ]]; then
    start_sentry
    tls=(--tls-enabled --sentry-address "localhost:$sentry_port" --trust-domain localhost
         --trust-anchors-file "$data/certs/ca.crt")
    mode=mTLS
  fi
  start_daemon placement "$dapr_bin/placement" --port "$placement_port" "${tls[@]}" \
    --healthz-port 58081 --metrics-port 59091 --log-level warn
  mkdir -p "$data/scheduler"
  # Where daprd connects to the scheduler: the address it broadcasts (the
  # proxy's, with Toxiproxy on the link).
  local broadcast_port=$scheduler_port
  [[ "$toxiproxy" != on ]] || broadcast_port=51006
  start_daemon scheduler "$dapr_bin/scheduler" --port "$scheduler_port" "${tls[@]}" \
    --identity-directory-write "$data/run/scheduler-identity" \
    --etcd-data-dir "$data/scheduler" --etcd-client-port 52379 \
    --override-broadcast-host-port "localhost:$broadcast_port" \
    --healthz-port 58082 --metrics-port 59092 --log-level warn
  wait_for placement 30 http_ok http://127.0.0.1:58081/healthz || die "placement unhealthy (see $logs/placement.log)"
  wait_for scheduler 60 http_ok http://127.0.0.1:58082/healthz || die "scheduler unhealthy (see $logs/scheduler.log)"
  say "placement :$placement_port and scheduler :$scheduler_port up ($mode)"
}

# The run file `dapr run -f` gets: dapr.yaml, or one derived from it in $run.
# INTRADAY_OBSERVABILITY=off (bench/e2e_latency.py measures what tracing
# and metrics cost): the sidecars sample no trace and expose no metrics, the
# apps export no spans. INTRADAY_MTLS=off (bench/load.py's A/B of what
# mTLS costs): the sidecars talk plain gRPC, and without SPIFFE identities
# there is no access control between the apps either (the API and app
# tokens stay). INTRADAY_COMPONENTS=gcp-emulated: the components of
# deploy/gcp_emulated.py.
run_file() {
  # Absolute paths: `dapr run` reads a run file's paths from its own directory.
  # Each app has its own configuration (components/config/local-<app>.yaml:
  # the shared one and its secrets, deploy/app_configs.py); a change applies
  # to every one of them.
  local resources="$root/components/local" derived=0 app
  local changes=()
  [[ "${INTRADAY_OBSERVABILITY:-on}" == off ]] && changes+=(untraced)
  [[ "${INTRADAY_MTLS:-on}" == off ]] && changes+=(plain)
  if ((${#changes[@]})); then
    for app in gateway forecaster telemetry trading; do
      .venv/bin/python - "$root/components/config/local-$app.yaml" "$run/config-$app.yaml" "${changes[@]}" <<'PY'
import sys
import yaml
source, target, *changes = sys.argv[1:]
doc = yaml.safe_load(open(source))
if "untraced" in changes:
    doc["spec"]["tracing"]["samplingRate"] = "0"
    doc["spec"]["metrics"]["enabled"] = False
if "plain" in changes:
    doc["spec"]["mtls"] = {"enabled": False}
    doc["spec"].pop("accessControl", None)
yaml.safe_dump(doc, open(target, "w"), sort_keys=False)
PY
    done
    derived=1
  fi
  if [[ "$components" == gcp-emulated ]]; then
    resources="$run/components-gcp-emulated"
    .venv/bin/python -m deploy.gcp_emulated "$resources" --endpoint "127.0.0.1:$pubsub_emulator_port" >/dev/null
    derived=1
  fi
  local proxied=()
  if [[ "$toxiproxy" == on ]]; then  # Redis through its proxy; placement, scheduler and the forecaster's app too
    rm -rf "$run/components-proxied"; mkdir -p "$run/components-proxied"
    for app in "$resources"/*.yaml; do
      sed "s|localhost:$redis_port|localhost:16379|" "$app" >"$run/components-proxied/${app##*/}"
    done
    resources="$run/components-proxied"
    proxied=(-e "s|placementHostAddress: localhost:$placement_port|placementHostAddress: localhost:51005|"
             -e "s|schedulerHostAddress: localhost:$scheduler_port|schedulerHostAddress: localhost:51006|"
             -e "s|appPort: 8001\$|appPort: 18001|")
    derived=1
  fi
  ((replicas > 1)) && derived=1
  ((derived)) || { echo dapr.yaml; return; }
  local configs=(-e "s|configFilePath: ./components/config/|configFilePath: $root/components/config/|")
  ((${#changes[@]})) && configs=(-e "s|configFilePath: ./components/config/local-\([a-z]*\)\.yaml|configFilePath: $run/config-\1.yaml|")
  sed "${configs[@]}" "${proxied[@]}" \
      -e "s|resourcesPath: ./components/local|resourcesPath: $resources|" \
      -e "s|appDirPath: \.$|appDirPath: $root|" dapr.yaml >"$run/dapr-run.yaml"
  if ((replicas > 1)); then
    .venv/bin/python - "$run/dapr-run.yaml" "$replicas" "${replicated[@]}" <<'PY'
import copy
import sys
import yaml
path, replicas, apps = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
doc = yaml.safe_load(open(path))
extra = []
for k in range(2, replicas + 1):
    for app in (a for a in doc["apps"] if a["appID"] in apps):
        twin = copy.deepcopy(app)
        step = 100 * (k - 1)
        for port in ("appPort", "daprHTTPPort", "daprGRPCPort", "metricsPort"):
            twin[port] = app[port] + step
        # The app listens on its own port (services/http.py); its logs and
        # its sidecar's go to the run's output: the log files are named
        # after the app id, which the replicas share.
        twin["env"] = {**app.get("env", {}), "INTRADAY_APP_PORT": str(twin["appPort"])}
        twin["appLogDestination"] = twin["daprdLogDestination"] = "console"
        extra.append(twin)
doc["apps"] += extra
yaml.safe_dump(doc, open(path, "w"), sort_keys=False)
PY
  fi
  echo "$run/dapr-run.yaml"
}

token() {  # token NAME: a random secret kept in $data/NAME (mode 600), made once
  local file="$data/$1"
  if [[ ! -s "$file" ]]; then
    (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$file")
  fi
  cat "$file"
}

start_services() {
  if alive apps; then say "services already running"; else
    for s in "${services[@]}"; do
      IFS=: read -r name app_port dapr_port <<<"$s"
      ! port_busy "$app_port" || die "port $app_port ($name) is in use by another process"
      ! port_busy "$dapr_port" || die "port $dapr_port ($name sidecar) is in use by another process"
    done
    # Apps and sidecars authenticate each other: every daprd requires the
    # Dapr API token from its app, and sends the app API token to it.
    export DAPR_API_TOKEN APP_API_TOKEN DAPR_TRUST_ANCHORS
    DAPR_API_TOKEN="$(token dapr-api-token)"
    APP_API_TOKEN="$(token app-api-token)"
    # daprd checks Sentry and its peers against the trust anchors (none without mTLS: no Sentry ran).
    DAPR_TRUST_ANCHORS=""
    [[ "${INTRADAY_MTLS:-on}" == off ]] || DAPR_TRUST_ANCHORS="$(cat "$data/certs/ca.crt")"
    # With Toxiproxy on the link, the apps reach PostgreSQL through its proxy.
    [[ "$toxiproxy" != on ]] || export INTRADAY_PG_DSN="postgresql://intraday@127.0.0.1:15432/intraday"
    # The services read their secrets (the audit DSN, the keys' pepper) from
    # the secret store (components/local/secretstore.yaml), a file made here
    # from the settings, as production reads them from Secret Manager.
    mkdir -p "$root/.data"
    (umask 077; .venv/bin/python -c 'import json; from intraday.config import get_settings as g; s = g()
print(json.dumps({"pg-dsn": s.pg_dsn, "api-key-pepper": s.api_key_pepper}))' >"$root/.data/secrets.json")
    export INTRADAY_SECRET_STORE=secretstore
    local file; file="$(run_file)"
    if [[ "${INTRADAY_OBSERVABILITY:-on}" == off ]]; then
      export INTRADAY_TRACES_EXPORTER=none; say "observability off: $file"
    fi
    [[ "$components" == local ]] || say "components: $components ($file)"
    start_daemon apps "$dapr_bin/dapr" run -f "$file"
  fi
  local s name app_port dapr_port
  for s in "${services[@]}"; do
    IFS=: read -r name app_port dapr_port <<<"$s"
    wait_for "$name" "$health_timeout" http_ok "http://127.0.0.1:$app_port/health" \
      || { unhealthy "$name"; die "$name unhealthy (no answer on :$app_port/health in ${health_timeout} s)"; }
    # daprd waits for its app's port to listen: a proxied app's opens now.
    if [[ "$toxiproxy" == on ]] && [[ " ${proxies[*]} " == *" $name-app:"* ]]; then
      curl -fsS -o /dev/null -X POST -d '{"enabled": true}' "http://127.0.0.1:$toxiproxy_port/proxies/$name-app" \
        || die "toxiproxy: the $name-app proxy did not open"
    fi
    wait_for "$name sidecar" 30 http_ok "http://127.0.0.1:$dapr_port/v1.0/healthz" \
      || { unhealthy "$name"; die "$name's sidecar unhealthy (no answer on :$dapr_port/v1.0/healthz in 30 s)"; }
    say "$name healthy (app :$app_port, sidecar :$dapr_port)"
  done
}

unhealthy() {  # unhealthy NAME: what a service that did not come up was doing, on stderr
  say "$1 did not become healthy; its run's last log lines (.dapr/logs: this run's app and sidecar):" >&2
  tail -n 20 "$logs/apps.log" >&2 2>/dev/null || true
  local f
  for f in $(ls -t .dapr/logs/"$1"_app_*.log 2>/dev/null | head -n 1) \
           $(ls -t .dapr/logs/"$1"_daprd_*.log 2>/dev/null | head -n 1); do
    printf '==> %s <==\n' "$f" >&2; tail -n 40 "$f" >&2
  done
  # An app that runs but does not answer: where its threads are (py-spy).
  local pid
  for pid in $(pgrep -f "python -m services\.$1\$" || true); do
    say "$1 (pid $pid) is running; its threads:" >&2
    timeout 20 .venv/bin/py-spy dump --pid "$pid" >&2 2>&1 || true
  done
}

up() {
  mkdir -p "$run" "$logs"
  chmod 755 "$data"
  [[ -x "$dapr_bin/daprd" && -x .venv/bin/intraday ]] || die "not set up: run make setup"
  case "$components" in
    local) ;;
    gcp-emulated) start_pubsub_emulator ;;
    *) die "INTRADAY_COMPONENTS=$components: local or gcp-emulated" ;;
  esac
  start_redis
  start_postgres
  [[ "$toxiproxy" != on ]] || start_toxiproxy
  start_zipkin
  start_prometheus
  start_dapr_control_plane
  .venv/bin/intraday db migrate
  # A key for the local user (all scopes): the CLI and the benchmarks read it.
  .venv/bin/intraday keys create local --scopes all --out "$data/api-key" --if-missing >/dev/null
  say "API key for the gateway in $data/api-key (the CLI reads it; curl: -H \"Authorization: Bearer \$(cat $data/api-key)\")"
  if ! alive apps; then
    # INTRADAY_DEMO_FLEET=off: an empty store, for a fleet of the user's own
    # (`intraday import`; make up-swiss).
    [[ "${INTRADAY_DEMO_FLEET:-on}" == off ]] || .venv/bin/intraday fleet demo --if-empty
    first_model
  fi
  start_services
  # Restarts an app or sidecar that dies, with backoff, as Kubernetes would.
  rm -rf "$run/hold" "$run/env"  # nothing held down, no deploy's environment, from an earlier run
  start_daemon supervisor .venv/bin/python scripts/supervise.py "$run"
  say "supervisor: restarts what dies (log: $logs/supervisor.log)"
  say "up: gateway on http://127.0.0.1:8000"
}

# A first start serves a trained model, not only the seasonal fallback: with
# no version promoted yet, train one on the store's fleet (the demo fleet:
# 200,000 sampled rows, about 20 s here) before the services start (the
# telemetry service then holds the store). As the training workflow does, it
# learns from the data before the last 7 days, is scored there against the
# seasonal fallback and promoted only if better; so the daily training's
# challengers are scored on days it never saw. Later starts keep the one
# they find. INTRADAY_FIRST_MODEL=off skips it (the test stack, whose
# tests train their own).
first_model() {
  [[ "${INTRADAY_FIRST_MODEL:-on}" != off ]] || return 0
  if .venv/bin/intraday models list --json 2>/dev/null \
    | .venv/bin/python -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["promoted"] else 1)'; then
    return 0
  fi
  say "no model is served yet: training one on the fleet in the store (about 20 s) ..."
  local out
  if out="$(.venv/bin/intraday train --local --promote --if-none-promoted --holdout-days 7 --train-rows 200000 \
      2>"$logs/first-model.log")"; then
    say "${out%%$'\n'*}"
  else
    say "no model trained (see $logs/first-model.log); forecasts come from the seasonal fallback"
  fi
}

stop_pid() {  # stop_pid NAME: TERM the process group, KILL after 15 s
  alive "$1" || { rm -f "$run/$1.pid"; return 0; }
  local pid; pid="$(cat "$run/$1.pid")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$run/$1.pid"
  say "$1 stopped"
}

down() {
  stop_pid supervisor  # first: it would restart what the next steps stop
  stop_pid apps
  # daprd and app processes that outlived their parent (e.g. after a crash)
  pkill -f "daprd .*--app-id (telemetry|forecaster|trading|gateway)( |$)" 2>/dev/null || true
  pkill -f "python -m services\.(telemetry|forecaster|trading|gateway)$" 2>/dev/null || true
  stop_pid scheduler
  stop_pid placement
  stop_pid sentry
  stop_pid zipkin
  stop_pid prometheus
  stop_pid pubsub-emulator
  stop_pid toxiproxy
  local bin; bin="$(pg_bin)"
  if [[ -n "$bin" && -s "$data/postgres/PG_VERSION" ]] && as_pg "$bin/pg_ctl" -D "$data/postgres" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$data/postgres" -m fast -w stop >/dev/null && say "postgres stopped"
  fi
  if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
    redis-cli -p "$redis_port" shutdown >/dev/null 2>&1 || true
    say "redis stopped"
  fi
  say "down (data kept in $data)"
}

status() {
  local s name app_port dapr_port
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && say "redis: up" || say "redis: down"
  for s in zipkin prometheus pubsub-emulator toxiproxy sentry placement scheduler apps supervisor; do alive "$s" && say "$s: up" || say "$s: down"; done
  for s in "${services[@]}"; do
    IFS=: read -r name app_port dapr_port <<<"$s"
    http_ok "http://127.0.0.1:$app_port/health" && say "$name: healthy" || say "$name: not answering"
  done
}

start_stores() {  # start redis|postgres ...: one backing store again (after a fault), as `up` does
  local s
  mkdir -p "$run" "$logs"
  for s in "$@"; do
    case "$s" in
      redis) start_redis ;;
      postgres) start_postgres ;;
      *) die "start: unknown store '$s' (redis or postgres)" ;;
    esac
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  start) shift; [[ $# -gt 0 ]] || die "usage: $0 start redis|postgres ..."; start_stores "$@" ;;
  *) echo "usage: $0 up|down|status|start redis|postgres" >&2; exit 2 ;;
esac
