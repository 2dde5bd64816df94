#!/bin/sh
# Starts redis-server with its password in an ACL file, never on a command line
# (`--requirepass "$(cat ...)"` would show it in `ps` and `docker top`). The ACL
# file lives in the data volume and holds only the SHA-256 of the password. It
# is written from /run/secrets/redis_password on the first start only: after
# that the rotate_hook (deploy/hooks/redis-password) changes the live ACL and
# saves it, so a restart keeps the password the clients use.
set -eu
umask 077
mkdir -p /data
acl=/data/users.acl
if [ ! -s "$acl" ]; then
  hash=$(sha256sum </run/secrets/redis_password | cut -d ' ' -f 1)
  printf 'user default on #%s ~* &* +@all\n' "$hash" >"$acl.new"
  mv "$acl.new" "$acl"
fi
printf 'port 6379\nprotected-mode no\ndir /data\naclfile %s\n' "$acl" >/tmp/redis.conf
exec redis-server /tmp/redis.conf
