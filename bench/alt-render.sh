#!/usr/bin/env bash
# The shell alternative to `wavemap-agent runtime-env --execute`: what an
# SSM document would run. One `aws ssm get-parameters-by-path --recursive
# --with-decryption` (the CLI follows NextToken itself), then one jq per
# group writing <env_dir>/<group>.env (mode 0600, written to a temp file
# and renamed, so a reader never sees half a file), quoted like the agent
# quotes (bench/render.jq).
#
# Usage: bench/alt-render.sh PREFIX ENV_DIR GROUP...
#   PREFIX ends with '/', e.g. /wavemap/dev/runtime/
# AWS_* variables (region, endpoint, credentials) come from the caller.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 3 ] || { echo "usage: $0 PREFIX ENV_DIR GROUP..." >&2; exit 2; }
prefix=$1 env_dir=$2
shift 2
umask 077
mkdir -p "$env_dir"
params=$(mktemp "$env_dir/.params.XXXXXX")
trap 'rm -f "$params"' EXIT
aws ssm get-parameters-by-path --path "${prefix%/}" --recursive --with-decryption \
    --output json >"$params"
for group in "$@"; do
    tmp=$(mktemp "$env_dir/.$group.env.XXXXXX")
    jq -r --arg p "$prefix$group/" -f "$here/render.jq" "$params" >"$tmp"
    mv -f "$tmp" "$env_dir/$group.env"
done
