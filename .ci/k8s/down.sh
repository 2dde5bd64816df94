#!/bin/bash
# Stops the project's Kubernetes test cluster (.ci/k8s/up.sh): `.ci/k8s/down.sh [--purge]`.
#
# It stops what up.sh started and nothing else:
#   - the pods, gracefully, while the API server and kubelet still run;
#   - the five processes whose pid files up.sh wrote under $K/run, each only while
#     its pid is still that binary under $K (a recycled pid is left alone);
#   - this kubelet's containers only: the pod sandboxes checkpointed under
#     $K/dockershim and the containers labelled with their ids, never other
#     k8s_* containers on the same dockerd;
#   - the kubelet's mounts under $K (secret tmpfs, subPath binds), and the
#     hard-coded host directories that up.sh saw absent.
# It keeps the binaries, source, images, certificates and state, so the next
# up.sh starts in about 30 s. --purge also deletes the state, certificates, logs
# and the k8stest/* images (not the binaries or source: a rebuild takes 10 min).
# Idempotent: with nothing running it only tidies what is left. Teardown goes on
# past a failing step. Run as root.
set -uo pipefail
K=${K:-/var/tmp/k8s-test}
R=$K/run
KUBECTL=${KUBECTL:-kubectl}
export KUBECONFIG=$K/admin.kubeconfig

exe_of() { if [ "$1" = etcd ]; then echo "$K/root/usr/bin/etcd"; else echo "$K/bin/$1"; fi; }
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
  for ns in $("$KUBECTL" get ns -o name 2>/dev/null | sed 's|namespace/||' | grep -vE '^(kube-system|kube-public|kube-node-lease)$'); do
    "$KUBECTL" -n "$ns" delete deploy,rs,sts,ds,job,pod --all --wait=false >/dev/null 2>&1
  done
  for _ in $(seq 60); do [ "$("$KUBECTL" get pods -A --no-headers 2>/dev/null | wc -l)" = 0 ] && break; sleep 1; done
fi
# 2. stop processes by recorded pid
for n in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$n"; done
# 3. remove what is left of this kubelet's pods: dockershim names each sandbox's
#    checkpoint after the sandbox container's id, and labels the pod's containers
#    with that id.
removed=0
for f in "$K"/dockershim/sandbox/*; do
  [ -f "$f" ] || continue
  id=$(basename "$f")
  ids=$({ docker ps -aq --no-trunc --filter "id=$id"
          docker ps -aq --no-trunc --filter "label=io.kubernetes.sandbox.id=$id"; } 2>/dev/null)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086 # ids is a list of container ids
    docker rm -f $ids >/dev/null 2>&1 && removed=$((removed + $(echo $ids | wc -w)))
  fi
  rm -f "$f"
done
[ "$removed" -gt 0 ] && echo "removed $removed pod containers"
# 4. unmount kubelet volumes (secret tmpfs, subPath binds) and its self bind-mount
grep " $K/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
# 5. hard-coded host paths the kubelet/controller-manager create, only if up.sh saw them absent
for d in /var/log/pods /var/log/containers /var/lib/kubelet /usr/libexec/kubernetes; do
  f="$R/created$(echo "$d" | tr / _)"
  [ -f "$f" ] && rm -rf "$d" && rm -f "$f"
done
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$K/etcd-data" "$K/kubelet" "$K/dockershim" "$K/pki" "$K/logs" "$K"/*.kubeconfig "$K/apiserver-certs" "$K/cm-certs" "$K/sched-certs" "$K/cm-flex"
  docker rmi k8stest/busybox:1.35 k8stest/pause:3.4.1 >/dev/null 2>&1
fi
echo "down."
exit 0
