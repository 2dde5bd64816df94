#!/bin/bash
# The project's Kubernetes test cluster: `.ci/k8s/up.sh [build|start|all]`.
#
# A real single-node Kubernetes v1.20.2: kube-apiserver, kube-controller-manager,
# kube-scheduler and kubelet built from Debian bookworm's `kubernetes` source
# package, Debian's etcd 3.4, and the kubelet's dockershim on the local dockerd,
# so pods are Docker containers, Secrets are mounted as files and Deployments
# roll out. No registry is reachable: images must be local (imagePullPolicy:
# Never); this script builds k8stest/pause:3.4.1 and k8stest/busybox:1.35. There
# is no kube-proxy and no cluster DNS: reach pods by their docker0 IP.
#
#   build   packages (kubectl from Debian's kubernetes-client when there is none),
#           source, binaries and images, each only when missing. The first run
#           takes about 10 min on 2 cores (1.4 GB peak memory, 3 GB of disk);
#           later runs reuse everything and take seconds.
#   start   certificates (once) and the processes that are not running, then
#           waits for the node to be Ready (about 30 s).
#   all     both (the default).
#
# Idempotent: on a running cluster it changes nothing. A cold start (no component
# running) first clears what a cluster that was killed instead of stopped left
# behind (down.sh) and starts from an empty etcd, so each start is a fresh cluster.
#
# Everything lives under $K (default /var/tmp/k8s-test), except a deb-src entry
# (/etc/apt/sources.list.d/k8s-src.sources, added when apt has none, kept) and the
# kubelet's hard-coded /var/lib/kubelet, /var/log/pods, /var/log/containers and
# /usr/libexec/kubernetes, which down.sh removes when this script saw them absent.
# Result: KUBECONFIG=$K/admin.kubeconfig. Stop with down.sh. Run as root.
set -euo pipefail
K=${K:-/var/tmp/k8s-test}
APISERVER_PORT=${APISERVER_PORT:-16443}
ETCD_PORT=${ETCD_PORT:-23790}
KUBECTL=${KUBECTL:-kubectl}
SRCVER=1.20.5+really1.20.2
S=$K/kubernetes-$SRCVER
P=$K/pki
R=$K/run      # pid files, and markers of host paths this script created
L=$K/logs
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet"
COMPONENTS="etcd $BINS"
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$K" "$R" "$L" "$K/bin"
cd "$K"
log() { echo "+++ [$(date +%T)] $*"; }

# A pid file counts only while its pid is still that component's binary, so a
# recycled pid is never taken for (or, in down.sh, stopped as) the component.
exe_of() { if [ "$1" = etcd ]; then echo "$K/root/usr/bin/etcd"; else echo "$K/bin/$1"; fi; }
running() {
  local pid
  [ -f "$R/$1.pid" ] && pid=$(cat "$R/$1.pid") \
    && [ "$(readlink "/proc/$pid/exe" 2>/dev/null | sed 's/ (deleted)$//')" = "$(exe_of "$1")" ]
}

build() {
  # ---------------------------------------------------------------- packages
  local need=() pkg
  for pkg in dpkg-dev golang-go rsync gcc libc6-dev openssl time curl iproute2 socat; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  # The machine image normally ships a kubectl; Debian's matches the server.
  command -v "$KUBECTL" >/dev/null 2>&1 || need+=(kubernetes-client)
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # etcd + busybox: extract only (apt-get install etcd-server would start a system etcd)
  if [ ! -x "$K/root/usr/bin/etcd" ] || [ ! -x "$K/root/bin/busybox" ]; then
    log "fetching etcd-server, busybox-static .debs"
    mkdir -p "$K/debs"
    (cd "$K/debs" && apt-get download etcd-server busybox-static 2>/dev/null)
    local d
    for d in "$K"/debs/*.deb; do dpkg-deb -x "$d" "$K/root"; done
  fi

  # ---------------------------------------------------------------- source + build
  if [ ! -d "$S" ]; then
    if ! apt-get source --print-uris kubernetes >/dev/null 2>&1; then
      log "adding deb-src for bookworm"
      # the same mirror apt already uses for binary packages
      local mirror
      mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 | awk '{print $2}' || true)
      [ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
      [ -n "$mirror" ] || { echo "cannot find apt's Debian mirror" >&2; exit 1; }
      printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" \
        > /etc/apt/sources.list.d/k8s-src.sources
      apt-get update -qq
    fi
    log "apt-get source kubernetes"
    # into $K (the working directory); the pinned version first, else bookworm's current one
    apt-get source -qq "kubernetes=1.20.5+really1.20.2-1.1+deb12u1" >/dev/null 2>&1 \
      || apt-get source -qq kubernetes >/dev/null
  fi
  test -d "$S/vendor" || { echo "no vendor/ in $S" >&2; exit 1; }

  # Sandboxes where even root lacks CAP_SYS_RESOURCE cannot lower oom_score_adj; dockershim
  # hard-codes -998 for the pause container and runc then fails ("can't get final child's PID
  # from pipe: EOF"). Patch it to 0 only in that case.
  if ! (echo -1 > /proc/self/oom_score_adj) 2>/dev/null \
     && grep -q 'defaultSandboxOOMAdj int = -998' "$S/pkg/kubelet/dockershim/docker_sandbox.go"; then
    log "negative oom_score_adj not permitted: patching dockershim defaultSandboxOOMAdj to 0"
    sed -i 's/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0/' "$S/pkg/kubelet/dockershim/docker_sandbox.go"
    rm -f "$K/bin/kubelet"
  fi

  local missing="" b
  for b in $BINS; do [ -x "$K/bin/$b" ] || missing="$missing cmd/$b"; done
  if [ -n "$missing" ]; then
    log "building:$missing (takes ~10 min on 2 cores)"
    # GOPATH mode through the source's own make; a plain `go build` fails here.
    (cd "$S" && CGO_ENABLED=0 /usr/bin/time -v make WHAT="${missing# }") > "$L/build.log" 2>&1 \
      || { tail -40 "$L/build.log"; exit 1; }
    grep -E 'Elapsed|Maximum resident' "$L/build.log"
    for b in $BINS; do cp "$S/_output/bin/$b" "$K/bin/$b"; done
  fi

  # ---------------------------------------------------------------- local images
  if ! docker image inspect k8stest/pause:3.4.1 >/dev/null 2>&1; then
    log "building image k8stest/pause:3.4.1"
    mkdir -p "$K/img/pause"
    gcc -Os -Wall -Werror -static -DVERSION=v3.4.1-local -o "$K/img/pause/pause" "$S/build/pause/linux/pause.c"
    strip "$K/img/pause/pause"
    printf 'FROM scratch\nADD pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$K/img/pause/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t k8stest/pause:3.4.1 "$K/img/pause" >/dev/null
  fi
  if ! docker image inspect k8stest/busybox:1.35 >/dev/null 2>&1; then
    log "building image k8stest/busybox:1.35"
    mkdir -p "$K/img/busybox"
    cp "$K/root/bin/busybox" "$K/img/busybox/busybox"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\nENV PATH=/bin\nCMD ["/bin/sh"]\n' > "$K/img/busybox/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t k8stest/busybox:1.35 "$K/img/busybox" >/dev/null
  fi
  log "build ready: $K/bin, k8stest/pause:3.4.1, k8stest/busybox:1.35"
}

start() {
  local b
  for b in $BINS; do
    [ -x "$K/bin/$b" ] || { echo "no $K/bin/$b: run $0 build first" >&2; exit 1; }
  done
  command -v "$KUBECTL" >/dev/null 2>&1 || { echo "no $KUBECTL: run $0 build first" >&2; exit 1; }

  # ---------------------------------------------------------------- cold start: fresh state
  local n any=""
  for n in $COMPONENTS; do running "$n" && any=1; done
  if [ -z "$any" ]; then
    log "cold start: clearing what an earlier cluster left, fresh etcd"
    K="$K" KUBECTL="$KUBECTL" bash "$HERE/down.sh" >/dev/null
    if grep -q " $K/" /proc/mounts; then
      echo "mounts remain under $K; not deleting state:" >&2; grep " $K/" /proc/mounts >&2; exit 1
    fi
    rm -rf "$K/etcd-data" "$K/kubelet/root" "$K/dockershim"
  fi

  # ---------------------------------------------------------------- certs + kubeconfigs
  NODE=$(hostname | tr '[:upper:]' '[:lower:]')
  # --advertise-address must not be loopback: the host's own address.
  NODE_IP=${NODE_IP:-$(hostname -I | awk '{print $1}')}
  if [ ! -f "$P/ca.crt" ]; then
    log "generating certificates"
    mkdir -p "$P"; (
    cd "$P"
    openssl genrsa -out ca.key 2048 2>/dev/null
    openssl req -x509 -new -key ca.key -days 3650 -subj "/CN=k8s-test-ca" -out ca.crt
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > client.ext
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:%s\n' "$NODE_IP" > server.ext
    sign() { # name subject extfile
      openssl genrsa -out "$1.key" 2048 2>/dev/null
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile "$3" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr"
    }
    sign apiserver "/CN=kube-apiserver" server.ext
    sign admin "/O=system:masters/CN=admin" client.ext
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client.ext
    sign controller-manager "/CN=system:kube-controller-manager" client.ext
    sign scheduler "/CN=system:kube-scheduler" client.ext
    sign kubelet "/O=system:nodes/CN=system:node:$NODE" client.ext
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null )
  fi
  local u
  for u in admin controller-manager scheduler kubelet; do
    cat > "$K/$u.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {certificate-authority: $P/ca.crt, server: "https://127.0.0.1:$APISERVER_PORT"}
users:
- name: $u
  user: {client-certificate: $P/$u.crt, client-key: $P/$u.key}
contexts:
- name: local
  context: {cluster: local, user: $u}
current-context: local
EOF
  done
  export KUBECONFIG=$K/admin.kubeconfig

  # ---------------------------------------------------------------- processes
  launch() { # name cmd...
    local n=$1; shift
    if running "$n"; then log "$n already running"; return; fi
    log "starting $n"
    nohup "$@" > "$L/$n.log" 2>&1 < /dev/null &
    echo $! > "$R/$n.pid"
  }
  waitfor() { # description timeout cmd...
    local d=$1 t=$2; shift 2
    for _ in $(seq "$t"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    echo "timeout waiting for $d" >&2; return 1
  }
  # hard-coded kubelet paths outside $K: remember which ones we create
  local d
  for d in /var/log/pods /var/log/containers /var/lib/kubelet /usr/libexec/kubernetes; do
    [ -e "$d" ] || [ -e "$R/created$(echo "$d" | tr / _)" ] || touch "$R/created$(echo "$d" | tr / _)"
  done

  launch etcd "$(exe_of etcd)" --name k8s --data-dir "$K/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster k8s=http://127.0.0.1:23800
  waitfor etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  launch kube-apiserver "$K/bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" --insecure-port=0 --advertise-address="$NODE_IP" \
    --service-cluster-ip-range=10.96.0.0/12 --cert-dir="$K/apiserver-certs" \
    --client-ca-file="$P/ca.crt" --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
    --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
    --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true
  waitfor "apiserver /readyz" 90 curl -sf --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz"

  launch kube-controller-manager "$K/bin/kube-controller-manager" \
    --kubeconfig="$K/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$K/controller-manager.kubeconfig" --authorization-kubeconfig="$K/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10257 --port=0 --leader-elect=false --cert-dir="$K/cm-certs" \
    --flex-volume-plugin-dir="$K/cm-flex" \
    --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" --use-service-account-credentials=true \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" --service-cluster-ip-range=10.96.0.0/12
  launch kube-scheduler "$K/bin/kube-scheduler" --kubeconfig="$K/scheduler.kubeconfig" \
    --authentication-kubeconfig="$K/scheduler.kubeconfig" --authorization-kubeconfig="$K/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --port=0 --leader-elect=false --cert-dir="$K/sched-certs"

  mkdir -p "$K/kubelet/root" "$K/kubelet/pki" "$K/kubelet/volume-plugins" "$K/dockershim"
  local cgdriver
  cgdriver=$(docker info --format '{{.CgroupDriver}}')
  cat > "$K/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: $cgdriver
cgroupsPerQOS: false          # don't create /kubepods cgroups on a shared host
enforceNodeAllocatable: []
failSwapOn: false
makeIPTablesUtilChains: false # don't touch the host's iptables
imageGCHighThresholdPercent: 100   # never garbage-collect (other people's) images
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
volumePluginDir: $K/kubelet/volume-plugins
clusterDomain: cluster.local
EOF
  launch kubelet "$K/bin/kubelet" --config="$K/kubelet/config.yaml" --kubeconfig="$K/kubelet.kubeconfig" \
    --root-dir="$K/kubelet/root" --cert-dir="$K/kubelet/pki" --experimental-dockershim-root-directory="$K/dockershim" \
    --container-runtime=docker --pod-infra-container-image=k8stest/pause:3.4.1 --network-plugin= \
    --hostname-override="$NODE" --node-ip="$NODE_IP"

  node_ready() {
    "$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
  }
  waitfor "node Ready" 120 node_ready
  waitfor "default serviceaccount" 60 "$KUBECTL" -n default get serviceaccount default
  log "cluster up: export KUBECONFIG=$KUBECONFIG"
  "$KUBECTL" get nodes -o wide 2>&1 | grep -v 'version difference' || true
}

case "${1:-all}" in
  build) build ;;
  start) start ;;
  all) build; start ;;
  *) echo "usage: $0 [build|start|all]" >&2; exit 2 ;;
esac
