#!/usr/bin/env bash
# Installs moto's server and the AWS CLI for the AWS Secrets Manager store's
# tests (xtask/tests/it/aws.rs) when either is missing, and prints their versions.
# Idempotent and quiet: a machine that has `moto_server` and `aws` is left as
# it is. Source it (`. .ci/moto.sh`) to keep the PATH it may extend.
set -euo pipefail

scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if ! command -v moto_server >/dev/null 2>&1 || ! command -v aws >/dev/null 2>&1; then
  if [ ! -x "$scripts/moto_server" ] || [ ! -x "$scripts/aws" ]; then
    printf '\n== installing moto[server] and awscli\n'
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]' awscli
  fi
  case ":$PATH:" in *":$scripts:"*) ;; *) PATH="$scripts:$PATH" ;; esac
  export PATH
fi
for p in moto_server aws; do
  command -v "$p" >/dev/null 2>&1 || { echo "moto.sh: $p is still not on PATH after installing moto[server] and awscli" >&2; exit 1; }
done
echo "moto $(python3 -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || echo '?'), $(aws --version 2>&1)"
