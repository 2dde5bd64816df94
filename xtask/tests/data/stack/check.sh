#!/bin/bash
# Credential and certificate checks of xtask/tests/it/stack.rs, run in a container
# on the stack's network with the values in /creds (0600 files, never argv).
# k8s_stack.rs runs it in a pod with CREDS (another folder) and NGINX (the
# nginx Service's name) set.
#   pg:    exit 0 when PostgreSQL accepts $c/user with $c/password
#   redis: exit 0 when Redis accepts $c/redis
#   tls:   prints the SHA-256 fingerprint of the certificate nginx serves
set -u
c=${CREDS:-/creds}
case "$1" in
  pg)
    umask 077
    printf '[a]\nhost=postgres\nport=5432\ndbname=%s\nuser=%s\npassword=%s\nconnect_timeout=5\n' \
      "$(<"$c/db")" "$(<"$c/user")" "$(<"$c/password")" >/tmp/pg
    out=$(PGSERVICEFILE=/tmp/pg psql -XAtq -c 'SELECT 1' service=a 2>&1)
    echo "$out"
    [ "$out" = 1 ] ;;
  redis)
    hex=$(od -An -tx1 -v <"$c/redis" | tr -d ' \n' | sed 's/../\\x&/g')
    out=$(printf 'AUTH "%s"\nPING\n' "$hex" | redis-cli -h redis 2>&1)
    echo "$out"
    [ "$out" = $'OK\nPONG' ] ;;
  tls)
    openssl s_client -connect "${NGINX:-tasks.nginx}:443" </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 ;;
  *) echo "usage: check.sh pg|redis|tls" >&2; exit 2 ;;
esac
