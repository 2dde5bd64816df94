#!/bin/sh
# Runs once, when the postgres image initialises an empty data directory
# (/docker-entrypoint-initdb.d). Creates the second login role of the
# alternating pair: <user> and <user>_b. postgres_password rotations set the
# new password on the idle role and switch postgres_user to it
# (deploy/hooks/postgres-password), so tasks with the old pair keep working
# until they are replaced. The new role has no password until then.
set -eu
# The official image runs this with the bootstrap user in POSTGRES_USER; the
# names go to psql through its environment, never its command line.
export PGUSER="${PGUSER:-$POSTGRES_USER}" PGDATABASE="${PGDATABASE:-$POSTGRES_DB}"
case "$POSTGRES_USER" in
  *_b) other=${POSTGRES_USER%_b} ;;
  *) other=${POSTGRES_USER}_b ;;
esac
q=$(printf '%s' "$other" | sed 's/"/""/g')
printf 'CREATE ROLE "%s" LOGIN SUPERUSER;\n' "$q" | psql -X -q -v ON_ERROR_STOP=1
