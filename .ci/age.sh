#!/usr/bin/env bash
# Installs the age CLI for the encrypted backups (`backup-secrets`,
# `restore-secrets`; xtask/tests/it/backup.rs) when it is missing, and prints its
# version. Idempotent: a machine that has `age` and `age-keygen` is left as it
# is. Source it (`. .ci/age.sh`) from .ci/run.
set -euo pipefail

if ! command -v age >/dev/null 2>&1 || ! command -v age-keygen >/dev/null 2>&1; then
  printf '\n== installing age\n'
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq age >/dev/null
fi
for p in age age-keygen; do
  command -v "$p" >/dev/null 2>&1 || { echo "age.sh: $p is still not on PATH after installing age" >&2; exit 1; }
done
echo "age $(age --version)"
