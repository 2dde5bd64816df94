#!/bin/bash
# The load client of xtask/tests/it/compose_stack.rs, run in a container on the
# compose project's network. Each request is a new HTTP connection to the
# backend (busybox httpd on :3000, through compose's DNS name), whose CGI opens
# a new PostgreSQL and a new Redis connection with the credentials in its
# /run/secrets. One line per request: `EPOCH ok` or `EPOCH failed REASON`.
# Bounded: stops at /tmp/stop, MAX_REQUESTS or MAX_SECONDS, then prints
# `requests=N ok=N failed=N`.
n=0 ok=0 failed=0
end=$((SECONDS + ${MAX_SECONDS:-300}))
while [ ! -e /tmp/stop ] && [ "$n" -lt "${MAX_REQUESTS:-20000}" ] && [ "$SECONDS" -lt "$end" ]; do
  n=$((n + 1))
  out=$(curl -s --max-time 10 http://backend:3000/cgi-bin/check 2>&1)
  code=$?
  now=$(date +%s.%N)
  if [ "$out" = ok ]; then
    ok=$((ok + 1))
    echo "$now ok"
  else
    failed=$((failed + 1))
    reason=${out:-no answer (curl exit $code)}
    echo "$now failed ${reason//$'\n'/ }"
    sleep 0.1
  fi
done
echo "requests=$n ok=$ok failed=$failed"
