# Shared by the scripts under scripts/stack/ (sourced, never run).
#
# Everything the local stack keeps lives under $STACK_DIR (the repo's
# gitignored .stack/), computed from this file's location so a clone
# anywhere works. Ports are fixed and loopback-only so tests and the
# README can name them.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_DIR="$REPO_ROOT/.stack"
STACK_ENV="$STACK_DIR/env"
STACK_LOGS="$STACK_DIR/logs"
STACK_RUN="$STACK_DIR/run"

PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=55432
PG_USER=wavemap
# A loopback-only throwaway cluster: a fixed password keeps reruns simple.
PG_PASSWORD=wavemap-local-pg
PG_DATA="$STACK_DIR/pg/data"
PG_SOCKET_DIR="$STACK_DIR/pg/run"

REGISTRY_ADDR=127.0.0.1:5000
REGISTRY_DIR="$STACK_DIR/registry"
# What moto's ECR GetAuthorizationToken decodes to for its default account
# (moto/ecr/responses.py: "AWS:" + f"{registry_id}-auth-token").
REGISTRY_USER=AWS
REGISTRY_PASSWORD=123456789012-auth-token
REGISTRY_LONG_USER=longpass

MOTO_PORT=5055
MOTO_URL="http://127.0.0.1:$MOTO_PORT"

say() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# pid_alive PIDFILE PATTERN: true when the pid in PIDFILE runs and its
# command line contains PATTERN (so a recycled pid is not mistaken for ours).
pid_alive() {
    local pidfile=$1 pattern=$2 pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
wait_for() {
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit * 5; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}

# Append or replace KEY=VALUE in the stack env file (for build-images too).
stack_env_set() {
    local key=$1 value=$2 tmp
    tmp=$(mktemp "$STACK_DIR/.env.XXXXXX")
    if [ -f "$STACK_ENV" ]; then grep -v "^$key=" "$STACK_ENV" >"$tmp" || true; fi
    printf '%s=%s\n' "$key" "$value" >>"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$STACK_ENV"
}
