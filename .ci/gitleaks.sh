#!/usr/bin/env bash
# Builds gitleaks from the Go module proxy for the scan comparison
# (xtask/tests/it/scan_gitleaks.rs), once per machine and version, into
# /var/tmp/gitleaks-<version>/bin, and puts it on PATH. The module and build
# caches of that build are removed afterwards, so only the binary stays; a
# second run finds it and costs nothing. Cold: 194 s on two cores (downloads
# included; docs/testing.md). Source it (`. .ci/gitleaks.sh`) to keep the PATH.
set -euo pipefail

GITLEAKS_VERSION=${GITLEAKS_VERSION:-v8.30.1}
gitleaks_dir=/var/tmp/gitleaks-${GITLEAKS_VERSION#v}
if [ ! -x "$gitleaks_dir/bin/gitleaks" ]; then
  printf '\n== building gitleaks %s from the Go module proxy into %s\n' "$GITLEAKS_VERSION" "$gitleaks_dir"
  command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
  command -v go >/dev/null 2>&1 || { echo "gitleaks.sh: no Go toolchain on PATH (the machine image ships Go 1.26, which builds gitleaks)" >&2; exit 1; }
  # What an interrupted build left (no trap: this file is sourced by .ci/run,
  # whose EXIT trap stops the cluster).
  for old in /var/tmp/gitleaks-build.*; do
    [ -d "$old" ] && chmod -R u+w "$old" && rm -rf "$old"
  done
  build=$(mktemp -d /var/tmp/gitleaks-build.XXXXXX)
  t0=$(date +%s)
  mkdir -p "$gitleaks_dir"
  GOFLAGS=-mod=mod GOTOOLCHAIN=local GOBIN="$gitleaks_dir/bin.tmp" \
    GOMODCACHE="$build/mod" GOCACHE="$build/cache" GOPATH="$build/gopath" \
    go install "github.com/zricethezav/gitleaks/v8@$GITLEAKS_VERSION"
  mv "$gitleaks_dir/bin.tmp" "$gitleaks_dir/bin"
  chmod -R u+w "$build" && rm -rf "$build"
  echo "gitleaks: cold build $(( $(date +%s) - t0 ))s"
fi
case ":$PATH:" in *":$gitleaks_dir/bin:"*) ;; *) PATH="$gitleaks_dir/bin:$PATH" ;; esac
export PATH
# `go install` leaves the version string unset, so the version is the one asked for.
echo "gitleaks $GITLEAKS_VERSION ($(command -v gitleaks))"
