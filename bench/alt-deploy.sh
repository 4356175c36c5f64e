#!/usr/bin/env bash
# The shell alternative to `wavemap-agent runtime deploy --execute`: the
# pipeline an SSM document would otherwise run on the host.
#   1. render the env files from SSM      (bench/alt-render.sh: aws cli + jq)
#   2. log into ECR                       (aws ecr get-login-password | docker login)
#   3. pull                               (docker compose pull)
#   4. converge and wait for health       (docker compose up -d --wait)
# Prints `ALT_DEPLOY_STAGE_MS=render:N,login:N,pull:N,up:N` on stdout, the
# same shape as the agent's WAVEMAP_RUNTIME_DEPLOY_STAGE_MS marker.
#
# Usage: bench/alt-deploy.sh PROJECT COMPOSE_FILE ENV_DIR PREFIX REGISTRY BACKEND_IMAGE FRONTEND_IMAGE
# AWS_* variables come from the caller; DOCKER_CONFIG picks where docker
# login stores the credentials.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# = 7 ] || { echo "usage: $0 PROJECT COMPOSE_FILE ENV_DIR PREFIX REGISTRY BACKEND_IMAGE FRONTEND_IMAGE" >&2; exit 2; }
project=$1 compose_file=$2 env_dir=$3 prefix=$4 registry=$5
export WAVEMAP_BACKEND_IMAGE=$6 WAVEMAP_FRONTEND_IMAGE=$7 WAVEMAP_ENV_DIR=$env_dir

now() { date +%s%3N; }
t0=$(now)
"$here/alt-render.sh" "$prefix" "$env_dir" backend frontend postgres
t1=$(now)
aws ecr get-login-password | docker login --username AWS --password-stdin "$registry" >/dev/null
t2=$(now)
docker compose -p "$project" -f "$compose_file" pull --quiet
t3=$(now)
docker compose -p "$project" -f "$compose_file" up -d --wait --quiet-pull
t4=$(now)
echo "ALT_DEPLOY_STAGE_MS=render:$((t1 - t0)),login:$((t2 - t1)),pull:$((t3 - t2)),up:$((t4 - t3))"
