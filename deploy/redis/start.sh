#!/bin/sh
# Starts redis-server with its password in an ACL file, never on a command line
# (`--requirepass "$(cat ...)"` would show it in `ps` and `docker top`). The ACL
# file lives in the data volume and holds only the SHA-256 of the password. It
# is written from /run/secrets/redis_password on the first start only: after
# that the rotate_hook (deploy/hooks/redis-password) changes the live ACL and
# saves it, so a restart keeps the password the clients use.
#
# The hooks' own login: at each start a user `xtask-hook`, allowed only to
# change and save ACLs, gets a new random token. The token stays in this
# container (/tmp/xtask-hook/token, 0600): a hook reaches it only through
# `docker exec` or `kubectl exec` into this container, so it can add and drop
# the clients' passwords without knowing the live one.
set -eu
umask 077
mkdir -p /data /tmp/xtask-hook
acl=/data/users.acl
if [ ! -s "$acl" ]; then
  hash=$(sha256sum </run/secrets/redis_password | cut -d ' ' -f 1)
  printf 'user default on #%s ~* &* +@all\n' "$hash" >"$acl.new"
  mv "$acl.new" "$acl"
fi
token=$(od -An -tx1 -N 32 -v /dev/urandom | tr -d ' \n')
printf '%s' "$token" >/tmp/xtask-hook/token
hash=$(printf '%s' "$token" | sha256sum | cut -d ' ' -f 1)
{
  grep -v '^user xtask-hook ' "$acl" || true
  printf 'user xtask-hook on #%s resetchannels -@all +acl|setuser +acl|save +ping\n' "$hash"
} >"$acl.new"
mv "$acl.new" "$acl"
printf 'port 6379\nprotected-mode no\ndir /data\naclfile %s\n' "$acl" >/tmp/redis.conf
exec redis-server /tmp/redis.conf
