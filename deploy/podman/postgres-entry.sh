#!/bin/sh
# The PostgreSQL image's entry (deploy/podman/Containerfile), as the upstream
# image's for what docker-compose.yml uses: on an empty data directory,
# initdb with POSTGRES_USER as the superuser, its password from
# POSTGRES_PASSWORD_FILE (or POSTGRES_PASSWORD), password auth from the
# network, and POSTGRES_DB; then the server in the foreground.
set -eu
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
  password="$(cat "$POSTGRES_PASSWORD_FILE")"
else
  password="${POSTGRES_PASSWORD:-}"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "$password" ] || { echo "postgres: set POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD" >&2; exit 1; }
  pwfile="$(mktemp)"
  printf '%s\n' "$password" >"$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  [ "$db" = postgres ] || createdb --username="$user" "$db"
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgres: initialised $PGDATA (user $user, database $db)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
