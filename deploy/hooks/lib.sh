# Shared by the rotate hooks (sourced, not run). A hook runs on the manager
# where `cargo xtask rotate-secrets` runs, but the service whose credential it
# changes may run on any node, so the work is done by a one-off Swarm job on
# the stack's overlay network: it reaches the server by its service name, and
# it reads every value from /run/secrets (never argv, never env). The new value,
# which the hook gets on stdin, reaches the job through a temporary secret that
# is removed with the job.
#
# From rotate-secrets: XTASK_PROJECT, XTASK_ENV, XTASK_RUNTIME, XTASK_SECRET, XTASK_PHASE
# (before: the old versions are live; after: the new ones are, rollout done)
# and XTASK_ID_<NAME> (the live version of each secret, e.g.
# raqeem_production_redis_password_v3).
set -euo pipefail

if [ "${XTASK_RUNTIME:-swarm}" != swarm ]; then
  echo "warning: $(basename "$0") changes ${XTASK_SECRET:-the secret} on the swarm runtime only; ${XTASK_ENV:-this environment} runs on ${XTASK_RUNTIME}, where the server keeps the old value: recreate its data volume after this rotation (e.g. docker-compose down -v)" >&2
  exit 0
fi

stack="${XTASK_PROJECT:?run by cargo xtask rotate-secrets}-${XTASK_ENV:?run by cargo xtask rotate-secrets}"
tag="xtask-hook-$$-${RANDOM}"
# Who made the temporary secret and job: a hook killed before its cleanup
# leaves them (the secret holds the new value), and the next run of the tool
# on this host removes those whose hook process is gone.
owner_labels=(--label xtask.hook=1 --label "xtask.hook.pid=$$" --label "xtask.hook.host=$(uname -n)")

# live NAME: the live version of secret NAME.
live() {
  local v="XTASK_ID_$(printf '%s' "$1" | tr '[:lower:]' '[:upper:]')"
  [ -n "${!v:-}" ] || { echo "$0: $v is not set; run this hook through cargo xtask rotate-secrets" >&2; exit 2; }
  printf '%s' "${!v}"
}

# image_of SERVICE: the image the stack's SERVICE runs (it has the client tools).
image_of() {
  docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${stack}_$1" \
    || { echo "$0: service ${stack}_$1 not found; deploy the stack first (cargo xtask deploy ${XTASK_ENV})" >&2; exit 1; }
}

# The secret cannot be removed while a task of the job still uses it, so its
# removal is retried (up to about 30 s) until the task is gone. If it still
# fails, the hook says so: the next run of the tool removes it.
cleanup_job() {
  local i
  docker service rm "$tag" >/dev/null 2>&1 || true
  for i in $(seq 1 60); do
    # Swarm leaves a finished job's container behind; remove it where it ran here.
    docker ps -aq --filter "label=com.docker.swarm.service.name=$tag" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker secret inspect "$tag" >/dev/null 2>&1 || return 0
    docker secret rm "$tag" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "warning: $(basename "$0"): the temporary secret $tag (it holds the new value) could not be removed yet; the next run of cargo xtask on this host removes it, or run: docker secret rm $tag" >&2
}

# new_value_secret: stores this hook's stdin as the temporary secret $tag.
new_value_secret() {
  docker secret create "${owner_labels[@]}" "$tag" - >/dev/null
}

# run_job IMAGE SCRIPT [SECRET_ARGS...]: runs SCRIPT with sh (the official
# images are Alpine: POSIX sh and busybox tools only) in a one-off job
# on the stack's network and waits for it; prints its output; fails with it.
run_job() {
  local image=$1 script=$2 state="" i
  shift 2
  docker service create --quiet --detach --name "$tag" --mode replicated-job \
    --restart-condition none --no-resolve-image --network "${stack}_default" "${owner_labels[@]}" \
    "$@" --entrypoint sh "$image" -euc "$script" >/dev/null
  for i in $(seq 1 240); do
    state=$(docker service ps --no-trunc --format '{{.CurrentState}}' "$tag" 2>/dev/null | head -1)
    case "$state" in Complete*|Failed*|Rejected*) break ;; esac
    sleep 0.25
  done
  local logs
  logs=$(docker service logs --raw "$tag" 2>&1 || true)
  case "$state" in
    Complete*) [ -z "$logs" ] || printf '%s\n' "$logs" ;;
    *)
      echo "$0: the job on ${stack}_default ended ${state:-without a state}:" >&2
      [ -z "$logs" ] || printf '%s\n' "$logs" >&2
      docker service ps --no-trunc --format '{{.Error}}' "$tag" >&2 || true
      return 1 ;;
  esac
}
trap cleanup_job EXIT
