#!/usr/bin/env bash
# Builds the local images the stack tests run (xtask/tests/it/stack.rs): no
# registry can be reached, so a minimal Debian bookworm root filesystem with the
# real PostgreSQL, Redis and nginx (plus curl and openssl for the load client)
# is made with debootstrap from the mirror in apt's own sources list, imported
# once as a base image, and the stack's test images are built from it with the
# small entrypoints in .ci/images/. A second base, with Debian's nodejs and
# python3, is what the compose end-to-end test (xtask/tests/it/compose_e2e.rs)
# builds its TypeScript and Python reader services from. Idempotent: an image
# that exists is kept (bump TAG when .ci/images/ changes). Source it from
# .ci/run, or run it; `images.sh readers-base` builds only the readers' base.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

XTASK_IMAGE_TAG=${XTASK_IMAGE_TAG:-5}
base="xtask-stack-base:bookworm"
readers_base="xtask-readers-base:bookworm"
have() { docker image inspect "$1" >/dev/null 2>&1; }

# The first deb URI of apt's sources (deb822 .sources files or sources.list).
apt_mirror() {
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '/^URIs:/ && $2 ~ /debian\/?$/ && !done { print $2; done = 1 }')
  [ -n "$m" ] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '$1 == "deb" && !done { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; done = 1; break } }')
  [ -n "$m" ] && echo "$m"
}

build_base() { # IMAGE PACKAGES: debootstrap minbase with PACKAGES, imported as IMAGE
  local image=$1 include=$2
  have "$image" && return 0
  if ! command -v debootstrap >/dev/null 2>&1; then
    printf '\n== installing debootstrap\n'
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >/dev/null \
      || { apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >/dev/null; }
  fi
  local mirror root
  mirror=$(apt_mirror) || { echo "images.sh: no deb URI in apt's sources list" >&2; return 1; }
  root=$(mktemp -d /var/tmp/xtask-rootfs.XXXXXX)
  printf '\n== debootstrap bookworm (%s) from %s for %s (about 2 minutes)\n' "$include" "$mirror" "$image"
  if ! debootstrap --variant=minbase --include="$include" \
      bookworm "$root" "$mirror" >"$root.log" 2>&1; then
    tail -30 "$root.log" >&2; rm -rf "$root" "$root.log"; return 1
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import - "$image" >/dev/null
  rm -rf "$root" "$root.log"
}

build_one() { # NAME DIR: docker build DIR as xtask-stack-NAME:TAG from the base
  local tag="xtask-stack-$1:$XTASK_IMAGE_TAG"
  have "$tag" && return 0
  printf '== building %s\n' "$tag"
  DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base" -t "$tag" "$2" >/dev/null
}

t0=$(date +%s)
if [ "${1:-}" = readers-base ]; then
  build_base "$readers_base" nodejs,python3
  echo "$readers_base ready in $(( $(date +%s) - t0 ))s"
  exit 0
fi
printf "\n== stack test images (PostgreSQL, Redis, nginx from Debian)\n"
build_base "$base" postgresql,redis-server,nginx-light,curl,openssl
for d in .ci/images/*/; do
  [ -d "$d" ] || continue
  n=$(basename "$d")
  if [ "$n" = backend ]; then # busybox httpd serves the backend's CGI
    bb=$(command -v busybox || echo /bin/busybox)
    cmp -s "$bb" "$d/busybox" 2>/dev/null || cp "$bb" "$d/busybox"
  fi
  build_one "$n" "$d"
done
echo "stack images (tag $XTASK_IMAGE_TAG) ready in $(( $(date +%s) - t0 ))s: $(docker images --format '{{.Repository}}:{{.Tag}}' | grep -c '^xtask-stack-')"
t1=$(date +%s)
printf "\n== readers' base image (nodejs, python3 from Debian)\n"
build_base "$readers_base" nodejs,python3
echo "$readers_base ready in $(( $(date +%s) - t1 ))s"
