#!/bin/bash
# The project's Kubernetes test cluster: `.ci/k8s/up.sh [build|start|all]`.
#
# A real single-node Kubernetes v1.34: kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet and kube-proxy (iptables mode, so Service VIPs work)
# built from the Go module proxy (the module in .ci/k8s/src: k8s.io/kubernetes
# with every staging module mapped to its v0.34 release), etcd 3.6 built the
# same way, CoreDNS 1.13 (.ci/k8s/coredns) running as a pod behind the
# kube-dns Service, and a containerd of its own (Debian's package, run as a
# second instance with its own config, socket, root and state under $K; never
# the Docker engine's containerd) with Debian's CNI bridge plugin. No registry
# is reachable: images must be local (imagePullPolicy: Never). This script
# builds k8stest/pause:3.10, k8stest/busybox:1.35 and k8stest/coredns:1.13.1
# with the Docker engine and loads them into the cluster's containerd; tests
# load their own images the same way (`docker save | ctr -n k8s.io images import`).
#
#   build   packages, Go modules, binaries and images, each only when missing.
#           Measured from empty Go caches: 17.6 min on 2 cores that other
#           builds shared (18 CPU-minutes, so about 10 min on 2 idle cores;
#           1.9 GB peak memory, 4.7 GB of disk under $K/gopath and $K/gocache);
#           later runs reuse everything and take seconds.
#   start   certificates (once) and the processes that are not running, then
#           waits for the node to be Ready and CoreDNS to answer (15-30 s).
#   all     both (the default).
#
# Idempotent: on a running cluster it changes nothing. A cold start (no component
# running) first clears what a cluster that was killed instead of stopped left
# behind (down.sh) and starts from an empty etcd and no containers, so each start
# is a fresh cluster.
#
# Everything lives under $K (default /var/tmp/k8s-134), except: the CNI bridge
# k8stest0 (pods in 10.244.0.0/24) and the K8STEST-FORWARD chain that lets its
# traffic through the FORWARD chain, kube-proxy's KUBE-* iptables chains (the
# Service range is 10.96.0.0/12, the DNS Service 10.96.0.10), the containerd
# shims' sockets under /run/containerd/s, and the kubelet's hard-coded
# /var/lib/kubelet, /var/log/pods, /var/log/containers and
# /usr/libexec/kubernetes, which down.sh removes when this script saw them
# absent. down.sh removes all of these. The API server listens on all of this
# host's addresses (port $APISERVER_PORT) so that pods reach it through the
# `kubernetes` Service. Result: KUBECONFIG=$K/admin.kubeconfig. Run as root.
set -euo pipefail
K=${K:-/var/tmp/k8s-134}
APISERVER_PORT=${APISERVER_PORT:-16443}
ETCD_PORT=${ETCD_PORT:-23790}
KUBECTL=${KUBECTL:-kubectl}
KUBE_VERSION=v1.34.4   # keep in step with .ci/k8s/src/go.mod
COREDNS_VERSION=1.13.1 # keep in step with .ci/k8s/coredns/go.mod
PAUSE_IMAGE=k8stest/pause:3.10
BUSYBOX_IMAGE=k8stest/busybox:1.35
COREDNS_IMAGE=k8stest/coredns:$COREDNS_VERSION
SERVICE_CIDR=10.96.0.0/12
POD_CIDR=10.244.0.0/24
DNS_IP=10.96.0.10
BRIDGE=k8stest0
P=$K/pki
R=$K/run      # pid files, and markers of host paths this script created
L=$K/logs
C=$K/containerd
SOCK=$C/containerd.sock
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
COMPONENTS="containerd etcd $BINS"
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$K" "$R" "$L" "$K/bin"
cd "$K"
log() { echo "+++ [$(date +%T)] $*"; }

# A pid file counts only while its pid is still that component's binary, so a
# recycled pid is never taken for (or, in down.sh, stopped as) the component.
exe_of() { if [ "$1" = containerd ]; then echo /usr/bin/containerd; else echo "$K/bin/$1"; fi; }
running() {
  local pid
  [ -f "$R/$1.pid" ] && pid=$(cat "$R/$1.pid") \
    && [ "$(readlink "/proc/$pid/exe" 2>/dev/null | sed 's/ (deleted)$//')" = "$(exe_of "$1")" ]
}

# The Go toolchain's caches and module downloads stay under $K, so a rebuild reuses them.
go_env() {
  export GOPATH=$K/gopath GOMODCACHE=$K/gopath/pkg/mod GOCACHE=$K/gocache
  export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" GOTOOLCHAIN=local
}

build() {
  # ---------------------------------------------------------------- packages
  local need=() pkg
  for pkg in containerd runc containernetworking-plugins iptables busybox-static openssl curl iproute2 procps time; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  # The machine image normally ships a kubectl; Debian's kubernetes-client is the fallback.
  command -v "$KUBECTL" >/dev/null 2>&1 || need+=(kubernetes-client)
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -qq
    # policy-rc.d: installing containerd must not start the system's own instance
    local rc=/usr/sbin/policy-rc.d added=""
    [ -e "$rc" ] || { printf '#!/bin/sh\nexit 101\n' > "$rc"; chmod 755 "$rc"; added=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    [ -z "$added" ] || rm -f "$rc"
  fi
  command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
  command -v go >/dev/null 2>&1 || { echo "no Go toolchain on PATH (the machine image ships Go 1.26)" >&2; exit 1; }

  # ---------------------------------------------------------------- binaries
  local missing="" b
  for b in $BINS; do [ -x "$K/bin/$b" ] || missing="$missing k8s.io/kubernetes/cmd/$b"; done
  [ -x "$K/bin/etcd" ] || missing="$missing ./etcd"
  if [ -n "$missing" ] || [ ! -x "$K/bin/coredns" ]; then
    go_env
    local t0=$SECONDS
    local ld="-s -w"
    ld="$ld -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
    ld="$ld -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"
    ld="$ld -X k8s.io/component-base/version.gitTreeState=clean"
    if [ -n "$missing" ]; then
      log "go build:$missing (Kubernetes $KUBE_VERSION, etcd; the first build takes 10-18 min on 2 cores)"
      (cd "$HERE/src" && /usr/bin/time -v go build -p 2 -trimpath -ldflags "$ld" -o "$K/bin/" ${missing}) \
        > "$L/build.log" 2>&1 || { tail -40 "$L/build.log"; exit 1; }
      grep -E 'Elapsed|Maximum resident' "$L/build.log" || true
    fi
    if [ ! -x "$K/bin/coredns" ]; then
      log "go build: CoreDNS $COREDNS_VERSION"
      (cd "$HERE/coredns" && /usr/bin/time -v go build -p 2 -trimpath -ldflags "-s -w" -o "$K/bin/coredns" .) \
        > "$L/build-coredns.log" 2>&1 || { tail -40 "$L/build-coredns.log"; exit 1; }
      grep -E 'Elapsed|Maximum resident' "$L/build-coredns.log" || true
    fi
    log "binaries built in $((SECONDS - t0))s"
  fi

  # ---------------------------------------------------------------- local images
  if ! docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
    log "building image $PAUSE_IMAGE"
    mkdir -p "$K/img/pause"
    ( go_env; cd "$HERE/pause" && GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$K/img/pause/pause" . )
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$K/img/pause/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$PAUSE_IMAGE" "$K/img/pause" >/dev/null
  fi
  if ! docker image inspect "$BUSYBOX_IMAGE" >/dev/null 2>&1; then
    log "building image $BUSYBOX_IMAGE"
    mkdir -p "$K/img/busybox"
    cp /bin/busybox "$K/img/busybox/busybox"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\nENV PATH=/bin\nCMD ["/bin/sh"]\n' > "$K/img/busybox/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$BUSYBOX_IMAGE" "$K/img/busybox" >/dev/null
  fi
  if ! docker image inspect "$COREDNS_IMAGE" >/dev/null 2>&1; then
    log "building image $COREDNS_IMAGE"
    mkdir -p "$K/img/coredns"
    cp "$K/bin/coredns" "$K/img/coredns/coredns"
    printf 'FROM scratch\nCOPY coredns /coredns\nENTRYPOINT ["/coredns"]\n' > "$K/img/coredns/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$COREDNS_IMAGE" "$K/img/coredns" >/dev/null
  fi
  log "build ready: $K/bin, $PAUSE_IMAGE, $BUSYBOX_IMAGE, $COREDNS_IMAGE"
}

# `docker save IMAGE | ctr -n k8s.io images import -` into this cluster's containerd, when missing.
load_image() {
  local ref=docker.io/$1
  case "$1" in */*) ;; *) ref=docker.io/library/$1 ;; esac
  if ! ctr --address "$SOCK" -n k8s.io images ls -q | grep -qx "$ref"; then
    log "loading $1 into the cluster's containerd"
    docker save "$1" | ctr --address "$SOCK" -n k8s.io images import - >/dev/null
  fi
}

start() {
  local b
  for b in $BINS etcd coredns; do
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
    rm -rf "$K/etcd-data" "$K/kubelet/root" "$C/state" "$K/cni/ipam"
  fi

  # ---------------------------------------------------------------- certs + kubeconfigs
  NODE=$(hostname | tr '[:upper:]' '[:lower:]')
  # --advertise-address must not be loopback: the host's own address.
  NODE_IP=${NODE_IP:-$(hostname -I | awk '{print $1}')}
  if [ ! -f "$P/ca.crt" ] || ! grep -q "IP:$NODE_IP\$" "$P/server.ext" 2>/dev/null; then
    log "generating certificates"
    rm -rf "$P"; mkdir -p "$P"; (
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
    sign kube-proxy "/CN=system:kube-proxy" client.ext
    sign kubelet "/O=system:nodes/CN=system:node:$NODE" client.ext
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null )
  fi
  local u
  for u in admin controller-manager scheduler kubelet kube-proxy; do
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

  # containerd: a second instance, everything of its own. restrict_oom_score_adj
  # keeps the kubelet's negative oom_score_adj (refused on this host) at containerd's own.
  mkdir -p "$C/root" "$C/state" "$K/cni/net.d" "$K/cni/ipam"
  cat > "$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$K/cni/net.d"
EOF
  cat > "$K/cni/net.d/10-k8stest.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "k8stest",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$K/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
  # The Docker engine sets the FORWARD policy to DROP, and br_netfilter sends
  # bridged traffic through it: pod to pod (directly, or to a Service VIP that
  # kube-proxy rewrote to a pod) is allowed by a chain of this cluster's own.
  if ! iptables -C FORWARD -j K8STEST-FORWARD 2>/dev/null; then
    iptables -N K8STEST-FORWARD 2>/dev/null || iptables -F K8STEST-FORWARD
    iptables -A K8STEST-FORWARD -i "$BRIDGE" -j ACCEPT
    iptables -A K8STEST-FORWARD -o "$BRIDGE" -j ACCEPT
    iptables -I FORWARD 1 -j K8STEST-FORWARD
  fi
  launch containerd /usr/bin/containerd --config "$C/config.toml"
  waitfor containerd 30 ctr --address "$SOCK" version
  if [ -z "$any" ]; then
    # a killed run's containers and tasks: this containerd holds nothing else
    local id
    for id in $(ctr --address "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
      ctr --address "$SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      ctr --address "$SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
      ctr --address "$SOCK" -n k8s.io containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  load_image "$PAUSE_IMAGE"
  load_image "$BUSYBOX_IMAGE"
  load_image "$COREDNS_IMAGE"

  launch etcd "$K/bin/etcd" --name k8s --data-dir "$K/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster k8s=http://127.0.0.1:23800 --listen-metrics-urls http://127.0.0.1:23810
  waitfor etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  # All of this host's addresses: pods reach it through the `kubernetes` Service.
  launch kube-apiserver "$K/bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=0.0.0.0 --secure-port="$APISERVER_PORT" --advertise-address="$NODE_IP" \
    --service-cluster-ip-range="$SERVICE_CIDR" --cert-dir="$K/apiserver-certs" \
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
    --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false --cert-dir="$K/cm-certs" \
    --flex-volume-plugin-dir="$K/cm-flex" \
    --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" --use-service-account-credentials=true \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" --service-cluster-ip-range="$SERVICE_CIDR"
  launch kube-scheduler "$K/bin/kube-scheduler" --kubeconfig="$K/scheduler.kubeconfig" \
    --authentication-kubeconfig="$K/scheduler.kubeconfig" --authorization-kubeconfig="$K/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false

  cat > "$K/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $K/kube-proxy.kubeconfig}
hostnameOverride: $NODE
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false}
# leave the host's conntrack sysctls as they are
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  launch kube-proxy "$K/bin/kube-proxy" --config="$K/kube-proxy.yaml"

  mkdir -p "$K/kubelet/root" "$K/kubelet/pki" "$K/kubelet/volume-plugins"
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
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failCgroupV1: false           # this host's cgroup hierarchy is v1
cgroupsPerQOS: false          # don't create /kubepods cgroups on a shared host
enforceNodeAllocatable: []
oomScoreAdj: 0                # a negative oom_score_adj is refused here
failSwapOn: false
makeIPTablesUtilChains: false # kube-proxy's rules only; no kubelet chains on the host
imageGCHighThresholdPercent: 100   # never garbage-collect the local-only images
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
volumePluginDir: $K/kubelet/volume-plugins
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: ""
podCIDR: $POD_CIDR
EOF
  launch kubelet "$K/bin/kubelet" --config="$K/kubelet/config.yaml" --kubeconfig="$K/kubelet.kubeconfig" \
    --root-dir="$K/kubelet/root" --cert-dir="$K/kubelet/pki" \
    --hostname-override="$NODE" --node-ip="$NODE_IP"

  node_ready() {
    "$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
  }
  waitfor "node Ready" 120 node_ready
  waitfor "default serviceaccount" 60 "$KUBECTL" -n default get serviceaccount default

  # ---------------------------------------------------------------- cluster DNS
  sed -e "s|@IMAGE@|$COREDNS_IMAGE|" -e "s|@DNS_IP@|$DNS_IP|" "$HERE/coredns.yaml" \
    | "$KUBECTL" apply --server-side --field-manager=k8s-test-up -f - >/dev/null
  waitfor "CoreDNS rollout" 120 "$KUBECTL" -n kube-system rollout status deployment/coredns --timeout=5s
  dns_answers() { busybox nslookup kubernetes.default.svc.cluster.local "$DNS_IP" 2>/dev/null | grep -q 'Address.*10\.96\.0\.1$'; }
  if command -v busybox >/dev/null 2>&1; then
    waitfor "kube-dns answering on $DNS_IP" 60 dns_answers
  fi
  log "cluster up: export KUBECONFIG=$KUBECONFIG"
  "$KUBECTL" get nodes -o wide 2>&1 | grep -v 'version difference' || true
}

case "${1:-all}" in
  build) build ;;
  start) start ;;
  all) build; start ;;
  *) echo "usage: $0 [build|start|all]" >&2; exit 2 ;;
esac
