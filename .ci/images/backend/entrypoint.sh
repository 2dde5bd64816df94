#!/bin/sh
# Serves /health and /cgi-bin/check on :3000. On SIGTERM it keeps serving for
# 2 s before it stops: Swarm has already taken the task out of DNS by then, so
# a client that resolved the name just before still gets an answer.
httpd -f -p 3000 -h /www &
pid=$!
trap 'sleep 2; kill "$pid"; wait "$pid"; exit 0' TERM INT
wait "$pid"
