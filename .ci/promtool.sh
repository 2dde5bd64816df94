#!/usr/bin/env bash
# Builds Prometheus's `promtool` from the Go module proxy for the monitoring
# tests (xtask/tests/it/metrics.rs: `promtool check metrics` on the tool's
# OpenMetrics output, `promtool check rules` and `promtool test rules` on
# deploy/prometheus/secrets-alerts.yml), once per machine and version, into
# /var/tmp/promtool-<version>/bin, and puts it first on PATH. Source it
# (`. .ci/promtool.sh`) from .ci/run. A machine that already has that build
# is left as it is and takes no time; a `promtool` already on PATH is used as it
# is (PROMTOOL=/path overrides both in the tests).
#
# Cold (empty Go caches, modules from the proxy, GOFLAGS=-mod=mod, the default
# GOPROXY), measured on 2026-12-04 on two cores that other builds shared:
# 7 min 14 s (4 min 42 s user) with -tags remove_all_sd, 21 min 26 s (10 min
# 29 s user) without it. Peak disk about 2.1 GB (module downloads and the build
# cache, under the same folder, removed after the build); what stays is the
# 74 MB binary. A second run finds it and takes no time.
set -euo pipefail

PROMTOOL_VERSION=v0.316.0 # github.com/prometheus/prometheus (Prometheus 3.x's module version)
PT=${PROMTOOL_DIR:-/var/tmp/promtool-$PROMTOOL_VERSION}

if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$PT/bin/promtool" ]; then
  command -v go >/dev/null 2>&1 || { echo "promtool.sh: go is not on PATH (Go 1.26 is needed to build promtool)" >&2; exit 1; }
  mkdir -p "$PT"
  (
    # One build at a time on this machine; a second caller waits, then finds the binary.
    flock 9
    if [ ! -x "$PT/bin/promtool" ]; then
      printf '\n== building promtool %s from the Go module proxy (once per machine)\n' "$PROMTOOL_VERSION"
      t0=$(date +%s)
      rm -rf "$PT/src" "$PT/gocache" "$PT/gomod"
      mkdir -p "$PT/src" "$PT/bin"
      cd "$PT/src"
      export GOPATH=$PT/gopath GOMODCACHE=$PT/gomod GOCACHE=$PT/gocache
      export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false"
      go mod init promtool-build >/dev/null 2>&1
      go get "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION" >/dev/null 2>&1 \
        || go get "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
      # remove_all_sd (Prometheus 3.10+) leaves out the service discoveries
      # (cloud SDKs), which promtool's checks and rule tests do not use.
      go build -trimpath -tags remove_all_sd -o "$PT/bin/promtool.tmp" github.com/prometheus/prometheus/cmd/promtool
      mv "$PT/bin/promtool.tmp" "$PT/bin/promtool"
      t1=$(date +%s)
      echo "promtool $PROMTOOL_VERSION built in $((t1 - t0))s"
      go clean -modcache >/dev/null 2>&1 || true
      rm -rf "$PT/gocache" "$PT/gomod" "$PT/gopath" "$PT/src"
    fi
  ) 9>"$PT/.build.lock"
fi
if ! command -v promtool >/dev/null 2>&1; then
  PATH="$PT/bin:$PATH"
  export PATH
fi
command -v promtool >/dev/null 2>&1 || { echo "promtool.sh: promtool is still not on PATH after the build" >&2; exit 1; }
echo "promtool: $(command -v promtool) ($PROMTOOL_VERSION)"
