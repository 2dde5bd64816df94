#!/bin/bash
# Stops the project's Kubernetes test cluster (.ci/k8s/up.sh): `.ci/k8s/down.sh [--purge]`.
#
# It stops what up.sh started and nothing else:
#   - the pods, gracefully, while the API server and kubelet still run;
#   - the processes whose pid files up.sh wrote under $K/run, each only while
#     its pid is still that binary (a recycled pid is left alone);
#   - the containers of the cluster's own containerd (socket under $K; it holds
#     nothing else), then that containerd and the shims it started (found by
#     that socket on their command line), never the Docker engine or its
#     containerd;
#   - kube-proxy's KUBE-* iptables chains (`kube-proxy --cleanup`), the CNI
#     bridge k8stest0 and up.sh's K8STEST-FORWARD chain, the mounts under $K (secret tmpfs, subPath binds, rootfs
#     overlays, network namespaces), and the hard-coded host directories that
#     up.sh saw absent.
# It keeps the binaries, Go caches, images, certificates and state, so the next
# up.sh starts in 15-30 s. --purge also deletes the state, certificates, logs,
# the containerd root and the k8stest/* images in the Docker engine (not the
# binaries or Go caches: a rebuild takes 10-18 min).
# Idempotent: with nothing running it only tidies what is left. Teardown goes on
# past a failing step. Run as root.
set -uo pipefail
K=${K:-/var/tmp/k8s-134}
R=$K/run
C=$K/containerd
SOCK=$C/containerd.sock
BRIDGE=k8stest0
KUBECTL=${KUBECTL:-kubectl}
export KUBECONFIG=$K/admin.kubeconfig

exe_of() { if [ "$1" = containerd ]; then echo /usr/bin/containerd; else echo "$K/bin/$1"; fi; }
alive() {
  local pid
  [ -f "$R/$1.pid" ] && pid=$(cat "$R/$1.pid") \
    && [ "$(readlink "/proc/$pid/exe" 2>/dev/null | sed 's/ (deleted)$//')" = "$(exe_of "$1")" ]
}
stop() { # name
  alive "$1" || { rm -f "$R/$1.pid"; return 0; }
  local pid; pid=$(cat "$R/$1.pid"); kill "$pid"
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$R/$1.pid"; echo "stopped $1 ($pid)"
}

# 1. let the kubelet tear pods down gracefully while everything is still running
if alive kube-apiserver && alive kubelet; then
  for ns in $("$KUBECTL" get ns -o name 2>/dev/null | sed 's|namespace/||' | grep -vE '^(kube-public|kube-node-lease)$'); do
    "$KUBECTL" -n "$ns" delete deploy,rs,sts,ds,job,pod --all --wait=false >/dev/null 2>&1
  done
  for _ in $(seq 60); do [ "$("$KUBECTL" get pods -A --no-headers 2>/dev/null | wc -l)" = 0 ] && break; sleep 1; done
fi
# 2. stop the cluster's processes by recorded pid (containerd after the kubelet)
for n in kubelet kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$n"; done
# 3. what is left of the pods: every container of this containerd is the cluster's
removed=0
if alive containerd; then
  for id in $(ctr --address "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
    ctr --address "$SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1
    ctr --address "$SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1
    ctr --address "$SOCK" -n k8s.io containers delete "$id" >/dev/null 2>&1 && removed=$((removed + 1))
  done
fi
[ "$removed" -gt 0 ] && echo "removed $removed pod containers"
stop containerd
# its shims outlive it: those started for this socket only (the socket on
# their command line, and a containerd-shim binary)
for pid in $(pgrep -f -- "-address $SOCK" 2>/dev/null); do
  case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in
    */containerd-shim*) kill -9 "$pid" 2>/dev/null && echo "stopped shim $pid" ;;
  esac
done
# 4. kube-proxy's iptables chains and the CNI bridge
if [ -x "$K/bin/kube-proxy" ] && iptables -t nat -S 2>/dev/null | grep -q '^-N KUBE-'; then
  "$K/bin/kube-proxy" --cleanup >/dev/null 2>&1 || echo "kube-proxy --cleanup failed"
fi
# the kubelet's own chains (up.sh turns them off: makeIPTablesUtilChains false;
# an older start may have made them)
for ipt in iptables ip6tables; do
  command -v "$ipt" >/dev/null 2>&1 || continue
  while "$ipt" -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
  while "$ipt" -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
  for tc in filter:KUBE-FIREWALL filter:KUBE-KUBELET-CANARY nat:KUBE-KUBELET-CANARY \
            mangle:KUBE-KUBELET-CANARY mangle:KUBE-IPTABLES-HINT; do
    "$ipt" -t "${tc%%:*}" -F "${tc#*:}" 2>/dev/null && "$ipt" -t "${tc%%:*}" -X "${tc#*:}" 2>/dev/null
  done
done
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" && echo "removed bridge $BRIDGE"
while iptables -D FORWARD -j K8STEST-FORWARD 2>/dev/null; do :; done
iptables -F K8STEST-FORWARD 2>/dev/null && iptables -X K8STEST-FORWARD && echo "removed chain K8STEST-FORWARD"
# 5. unmount kubelet volumes, pod network namespaces and container rootfs under $K
grep " $K/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
# 6. hard-coded host paths the kubelet/controller-manager create, only if up.sh saw them absent
for d in /var/log/pods /var/log/containers /var/lib/kubelet /usr/libexec/kubernetes; do
  f="$R/created$(echo "$d" | tr / _)"
  [ -f "$f" ] && rm -rf "$d" && rm -f "$f"
done
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$K/etcd-data" "$K/kubelet" "$C" "$K/cni" "$K/pki" "$K/logs" "$K"/*.kubeconfig "$K/apiserver-certs" "$K/cm-certs" "$K/cm-flex"
  docker rmi k8stest/busybox:1.35 k8stest/pause:3.10 k8stest/coredns:1.13.1 >/dev/null 2>&1
fi
echo "down."
exit 0
