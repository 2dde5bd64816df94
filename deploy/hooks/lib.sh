# Shared by the rotate hooks (sourced, not run). A hook changes the copy of a
# credential that a server keeps itself (PostgreSQL's roles, Redis's ACL,
# Grafana's database) while rotate-secrets moves the clients to the new value.
#
# Where the work runs, on each runtime:
#   compose  `docker exec -i` into the service's running container;
#   k8s      `kubectl exec -i` into a running pod of the workload, with the
#            namespace, context and kubectl the tool uses;
#   swarm    `docker exec -i` into the server's task when it runs on this node
#            (the fast path); else a one-off Swarm job on the stack's network
#            that mounts the live secrets (any node).
# Inside the server's container the hook authenticates the way the server
# trusts local admin work: PostgreSQL over its Unix socket (the official
# image trusts local connections), Redis as the hooks' own user whose random
# token deploy/redis/start.sh makes at each start and never lets out of the
# container. Every value travels on stdin (the job's: a temporary secret
# mounted as a file), never on an argv or in an environment variable.
#
# Phases (XTASK_PHASE), run by rotate-secrets:
#   check   before anything changes: exits 0 when the hook can do its work
#           here, else 3 with what is wrong and the fix; rotate-secrets then
#           refuses the rotation. No hook warns and goes on.
#   before  the old versions are live: make the server accept the new value too.
#   after   the rollout is done: make the server refuse the old value.
#
# From rotate-secrets: XTASK_PROJECT, XTASK_ENV, XTASK_RUNTIME, XTASK_STORE,
# XTASK_DELIVERY, XTASK_SECRET, XTASK_PHASE, XTASK_ID_<NAME> (the live version
# of each secret in the store), XTASK_ALTERNATE_FILE (a 0600 file naming the
# roles of an alternating pair, before and after, a line each), and per
# runtime XTASK_DOCKER,
# XTASK_STACK (swarm), XTASK_COMPOSE_PROJECT (compose), XTASK_KUBECTL,
# XTASK_K8S_NAMESPACE and XTASK_K8S_CONTEXT (k8s). The new value is on stdin.
set -euo pipefail

hook=$(basename "$0")
phase=${XTASK_PHASE:-}
runtime=${XTASK_RUNTIME:-}
: "${XTASK_PROJECT:?run by cargo xtask rotate-secrets}" "${XTASK_ENV:?run by cargo xtask rotate-secrets}"
case "$phase" in
  check | before | after) ;;
  *) echo "$hook: XTASK_PHASE must be check, before or after; run it through cargo xtask rotate-secrets" >&2; exit 2 ;;
esac

# refuse WHY: this hook cannot do its work here (exit 3: rotate-secrets
# refuses before anything changes, or stops before anything is swapped).
refuse() {
  echo "$hook: $*" >&2
  exit 3
}

docker=${XTASK_DOCKER:-docker}
stack=${XTASK_STACK:-$XTASK_PROJECT-$XTASK_ENV}
compose_project=${XTASK_COMPOSE_PROJECT:-$XTASK_PROJECT-$XTASK_ENV}
kube=("${XTASK_KUBECTL:-kubectl}")
[ -z "${XTASK_K8S_CONTEXT:-}" ] || kube+=(--context "$XTASK_K8S_CONTEXT")
kube+=(-n "${XTASK_K8S_NAMESPACE:-$XTASK_PROJECT-$XTASK_ENV}")

case "$runtime" in
  swarm | compose | k8s) ;;
  *) refuse "changes ${XTASK_SECRET:-its secret} on the swarm, k8s and compose runtimes; ${XTASK_ENV} runs on '${runtime}'. Write a hook for that runtime (deploy/hooks/lib.sh shows the protocol)" ;;
esac

# The new value, from stdin (check: none). One line: the servers' clients
# take it from a file or a URL, and a line break would end it early.
read_value() {
  value=$(cat)
  [ -n "$value" ] || refuse "no new value on stdin"
  case "$value" in *$'\n'*) refuse "the new value of ${XTASK_SECRET:-the secret} holds a line break, which this hook cannot pass on; generate it again (cargo xtask rotate-secrets ${XTASK_ENV} --secret ${XTASK_SECRET:-NAME})" ;; esac
}

# live NAME: the live version of secret NAME in the store.
live() {
  local v
  v="XTASK_ID_$(printf '%s' "$1" | tr '[:lower:]' '[:upper:]')"
  [ -n "${!v:-}" ] || { echo "$hook: $v is not set; run this hook through cargo xtask rotate-secrets" >&2; exit 2; }
  printf '%s' "${!v}"
}

# server SERVICE: the container (compose, swarm: on this node) or pod (k8s)
# that runs SERVICE now; empty when there is none.
server() {
  case "$runtime" in
    compose)
      "$docker" ps -q --filter "label=com.docker.compose.project=$compose_project" \
        --filter "label=com.docker.compose.service=$1" --filter status=running | head -1 ;;
    swarm)
      "$docker" ps -q --filter "label=com.docker.swarm.service.name=${stack}_$1" \
        --filter status=running | head -1 ;;
    k8s)
      # Running and not being deleted: a pod that is shutting down may be
      # gone before the work ends.
      "${kube[@]}" get pods -l "app.kubernetes.io/name=$1" --field-selector=status.phase=Running \
        -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}' \
        | head -1 ;;
  esac
}

# where SERVICE: what runs SERVICE, for messages.
where() {
  case "$runtime" in
    compose) printf 'the compose service %s of project %s' "$1" "$compose_project" ;;
    swarm) printf 'the swarm service %s_%s' "$stack" "$1" ;;
    k8s) printf 'the pods of %s in namespace %s' "$1" "${XTASK_K8S_NAMESPACE:-$XTASK_PROJECT-$XTASK_ENV}" ;;
  esac
}

# in_server TARGET SCRIPT: runs SCRIPT with sh inside TARGET (from `server`),
# with this function's stdin as its stdin.
in_server() {
  case "$runtime" in
    k8s) "${kube[@]}" exec -i "$1" -- sh -c "$2" ;;
    *) "$docker" exec -i "$1" sh -c "$2" ;;
  esac
}

# need_server SERVICE: the target of `server`, or a refusal (deploy first).
need_server() {
  local t
  t=$(server "$1") || true
  [ -n "$t" ] || refuse "$(where "$1") has nothing running, so the hook has no server to change; deploy it first (cargo xtask deploy ${XTASK_ENV})"
  printf '%s' "$t"
}

# done_via PATH: says which way the work went (the tool times each phase).
done_via() {
  echo "${XTASK_SECRET:-$hook}: ${phase} step done $1"
}

# ---- the Swarm job, for a server on another node --------------------------
tag="xtask-hook-$$-${RANDOM}"
# Who made the temporary secret and job: a hook killed before its cleanup
# leaves them (the secret holds the new value), and the next run of the tool
# on this host removes those whose hook process is gone.
owner_labels=(--label xtask.hook=1 --label "xtask.hook.pid=$$" --label "xtask.hook.host=$(uname -n)")
job_started=

# image_of SERVICE: the image the stack's SERVICE runs (it has the client tools).
image_of() {
  "$docker" service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${stack}_$1" \
    || refuse "service ${stack}_$1 not found; deploy the stack first (cargo xtask deploy ${XTASK_ENV})"
}

# job_possible SERVICE: the job mounts the live Swarm secrets (XTASK_ID_*),
# which only a swarm store has.
job_possible() {
  [ "${XTASK_STORE:-swarm}" = swarm ] \
    || refuse "$(where "$1") has no task on this node, and the job that reaches other nodes mounts the live Swarm secrets, which a ${XTASK_STORE} store does not keep; run rotate-secrets on the node that runs it (docker service ps ${stack}_$1)"
  "$docker" service inspect "${stack}_$1" >/dev/null 2>&1 \
    || refuse "$(where "$1") is not deployed; deploy the stack first (cargo xtask deploy ${XTASK_ENV})"
}

# The secret cannot be removed while a task of the job still uses it, so its
# removal is retried (up to about 30 s) until the task is gone. If it still
# fails, the hook says so: the next run of the tool removes it.
cleanup_job() {
  [ -n "$job_started" ] || return 0
  local i
  "$docker" service rm "$tag" >/dev/null 2>&1 || true
  for i in $(seq 1 60); do
    # Swarm leaves a finished job's container behind; remove it where it ran here.
    "$docker" ps -aq --filter "label=com.docker.swarm.service.name=$tag" | xargs -r "$docker" rm -f >/dev/null 2>&1 || true
    "$docker" secret inspect "$tag" >/dev/null 2>&1 || return 0
    "$docker" secret rm "$tag" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "warning: $hook: the temporary secret $tag (it holds the new value) could not be removed yet; the next run of cargo xtask on this host removes it, or run: docker secret rm $tag" >&2
}
trap cleanup_job EXIT

# job_input: stores this function's stdin as the temporary secret $tag.
job_input() {
  job_started=1
  "$docker" secret create "${owner_labels[@]}" "$tag" - >/dev/null
}

# run_job IMAGE SCRIPT [SECRET_ARGS...]: runs SCRIPT with sh (the official
# images are Alpine: POSIX sh and busybox tools only) in a one-off job
# on the stack's network and waits for it; prints its output; fails with it.
run_job() {
  local image=$1 script=$2 state="" i
  shift 2
  job_started=1
  "$docker" service create --quiet --detach --name "$tag" --mode replicated-job \
    --restart-condition none --no-resolve-image --network "${stack}_default" "${owner_labels[@]}" \
    "$@" --entrypoint sh "$image" -euc "$script" >/dev/null
  for i in $(seq 1 480); do
    state=$("$docker" service ps --no-trunc --format '{{.CurrentState}}' "$tag" 2>/dev/null | head -1)
    case "$state" in Complete* | Failed* | Rejected*) break ;; esac
    sleep 0.125
  done
  local logs
  logs=$("$docker" service logs --raw "$tag" 2>&1 || true)
  case "$state" in
    Complete*) [ -z "$logs" ] || printf '%s\n' "$logs" ;;
    *)
      echo "$hook: the job on ${stack}_default ended ${state:-without a state}:" >&2
      [ -z "$logs" ] || printf '%s\n' "$logs" >&2
      "$docker" service ps --no-trunc --format '{{.Error}}' "$tag" >&2 || true
      return 1 ;;
  esac
}
