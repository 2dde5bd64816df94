#!/bin/bash
# Test stand-in for the official postgres image's entrypoint, on Debian's
# PostgreSQL 15: reads POSTGRES_USER/POSTGRES_PASSWORD from *_FILE, and on an
# empty data directory runs initdb as the postgres user, creates the user and
# database, and runs /docker-entrypoint-initdb.d/*.sh. Every value reaches psql
# on stdin or through a 0600 file, never on a command line.
set -euo pipefail
file_env() { # VAR: $VAR, else the contents of $VAR_FILE
  local f="${1}_FILE"
  if [ -n "${!f:-}" ]; then printf -v "$1" '%s' "$(<"${!f}")"; fi
  export "$1"
}
file_env POSTGRES_USER
file_env POSTGRES_PASSWORD
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
export POSTGRES_USER POSTGRES_DB
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
ident() { printf '"%s"' "${1//\"/\"\"}"; }
literal() { local q="'"; printf "'%s'" "${1//$q/$q$q}"; }

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chown postgres "$PGDATA" && chmod 0700 "$PGDATA"
  as_pg initdb -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -s start
  {
    printf 'SET log_statement = none;\n'
    printf 'CREATE ROLE %s LOGIN SUPERUSER PASSWORD %s;\n' "$(ident "$POSTGRES_USER")" "$(literal "$POSTGRES_PASSWORD")"
    printf 'CREATE DATABASE %s OWNER %s;\n' "$(ident "$POSTGRES_DB")" "$(ident "$POSTGRES_USER")"
  } | as_pg psql -X -q -v ON_ERROR_STOP=1 -d postgres
  for f in /docker-entrypoint-initdb.d/*.sh; do
    [ -e "$f" ] || continue
    echo "running $f"
    PGUSER=postgres PGDATABASE=$POSTGRES_DB as_pg /bin/sh "$f"
  done
  as_pg pg_ctl -D "$PGDATA" -m fast -w -s stop
fi
unset POSTGRES_PASSWORD
if [ "${1:-}" = postgres ]; then exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"; fi
exec "$@"
