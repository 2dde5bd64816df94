#!/usr/bin/env bash
# Kept in the repository so the benchmark never reaches outside its own tree.
# Baseline for benchmarks: what the shell scripts described in the seeds do.
# It reads a dotenv-style secrets file and creates one Docker Swarm secret per key,
# sequentially, named <prefix>_<key in lower case>, the value fed on stdin.
# Like the seeds' setup-secrets-*.sh it fails on a name that already exists.
# usage: swarm-setup-baseline.sh SECRETS_FILE PREFIX
set -euo pipefail
file=$1 prefix=$2
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in ''|'#'*) continue ;; esac
  key=${line%%=*}
  value=${line#*=}
  key=${key#export }
  name="${prefix}_$(printf '%s' "$key" | tr '[:upper:]' '[:lower:]')"
  printf '%s' "$value" | docker secret create "$name" - >/dev/null
  echo "created $name"
done < "$file"
