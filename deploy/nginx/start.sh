#!/bin/sh
# Runs nginx in the foreground. On SIGTERM it keeps serving for 2 s before a
# graceful quit: Swarm has already taken the task out of DNS, so a client that
# resolved the name just before still completes its TLS handshake.
nginx -c /etc/nginx/xtask-nginx.conf -g 'daemon off;' &
pid=$!
trap 'sleep 2; kill -QUIT "$pid"; wait "$pid"; exit 0' TERM INT
wait "$pid"
