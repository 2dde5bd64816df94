#!/bin/bash
# Checks of xtask/tests/it/compose_stack.rs, run in a container on the compose
# project's network with the values in /creds (0600 files, never argv).
#   sql:   runs /creds/sql in PostgreSQL as /creds/user with /creds/password
#          on database /creds/db; prints psql's output (errors included);
#          exit 0 when psql succeeded
#   redis: exit 0 when Redis accepts /creds/redis; prints Redis's answer
set -u
case "$1" in
  sql)
    umask 077
    printf '[a]\nhost=postgres\nport=5432\ndbname=%s\nuser=%s\npassword=%s\nconnect_timeout=5\n' \
      "$(</creds/db)" "$(</creds/user)" "$(</creds/password)" >/tmp/pg
    PGSERVICEFILE=/tmp/pg psql -XAtq -v ON_ERROR_STOP=1 service=a </creds/sql 2>&1 ;;
  redis)
    hex=$(od -An -tx1 -v </creds/redis | tr -d ' \n' | sed 's/../\\x&/g')
    out=$(printf 'AUTH "%s"\nPING\n' "$hex" | redis-cli -h redis 2>&1)
    echo "$out"
    [ "$out" = $'OK\nPONG' ] ;;
  *) echo "usage: client.sh sql|redis" >&2; exit 2 ;;
esac
