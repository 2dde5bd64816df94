#!/bin/bash
# The load client of xtask/tests/it/stack.rs, run in a container on the stack's
# network (and of k8s_stack.rs, in a pod of the stack's namespace, with URL set
# to the nginx Service). Each request is a new TLS connection to nginx (any
# task, through Docker's DNS), which proxies to a backend task that opens a new
# PostgreSQL and a new Redis connection. Bounded: stops at /tmp/stop,
# MAX_REQUESTS or MAX_SECONDS, then prints `requests=N ok=N failed=N`.
n=0 ok=0 failed=0
end=$((SECONDS + ${MAX_SECONDS:-600}))
while [ ! -e /tmp/stop ] && [ "$n" -lt "${MAX_REQUESTS:-50000}" ] && [ "$SECONDS" -lt "$end" ]; do
  n=$((n + 1))
  out=$(curl -sk --max-time 10 "${URL:-https://tasks.nginx/cgi-bin/check}" 2>&1)
  if [ "$out" = ok ]; then
    ok=$((ok + 1))
  else
    failed=$((failed + 1))
    echo "request $n failed: ${out:-no answer}" >&2
  fi
done
echo "requests=$n ok=$ok failed=$failed"
