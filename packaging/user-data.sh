#!/bin/bash
# EC2 user data for the Wavemap runtime host (Debian or Ubuntu AMI):
# install Docker and wavemap-agent, put the host config in place, enable the
# agent and start it. Runs once, as root, at first boot (cloud-init).
#
# Fill in the three values below (the .deb and its checksum come from the
# release that built them: scripts/build-deb prints the path; sha256sum it).
# The instance profile needs s3:GetObject on the .deb, plus what the agent
# itself needs (SSM GetParametersByPath/GetParameters with decryption on
# /wavemap/dev/runtime/*, ECR GetAuthorizationToken and image pulls) and
# the AmazonSSMManagedInstanceCore policy for Run Command.
set -euo pipefail

WAVEMAP_AGENT_DEB_URI="s3://REPLACE-artifacts-bucket/wavemap-agent/wavemap-agent_0.1.0-1_amd64.deb"
WAVEMAP_AGENT_DEB_SHA256="REPLACE-with-the-64-hex-sha256-of-the-deb"
WAVEMAP_COMPOSE_URI="s3://REPLACE-artifacts-bucket/wavemap-runtime/compose.yaml"
# Optional: the runtime parameter contract as JSON, projected from the
# infrastructure outputs (names, types, required, groups, variables of the
# /wavemap/dev/runtime/* parameters). Empty: no contract file is written and
# the agent's runtime.parameters (empty by default) is the whole contract.
WAVEMAP_RUNTIME_CONTRACT_URI=""
# Debian 12 only (it packages no Compose v2): the docker/compose release
# binary (docker-compose-linux-x86_64 from github.com/docker/compose
# releases, or a copy in your bucket) and its sha256. Leave empty elsewhere.
WAVEMAP_COMPOSE_PLUGIN_URI=""
WAVEMAP_COMPOSE_PLUGIN_SHA256=""

log() { echo "wavemap user-data: $*" >&2; }

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Docker Engine from the distribution (the agent talks to the Engine API).
apt-get install -y -q docker.io ca-certificates curl
systemctl enable --now docker.service
# The AWS CLI for the S3 copies: a snap on recent Ubuntu, a package on Debian.
if ! command -v aws >/dev/null 2>&1; then
	snap install aws-cli --classic 2>/dev/null || apt-get install -y -q awscli
fi

fetch() { # URI DEST
	case "$1" in
	s3://*) aws s3 cp --only-show-errors "$1" "$2" ;;
	https://*) curl --fail --silent --show-error --location --output "$2" "$1" ;;
	*) log "unsupported URI $1"; exit 1 ;;
	esac
}

# Compose v2 as the docker CLI plugin, so an operator's `docker compose`
# in /opt/wavemap/runtime sees the project the agent runs (the agent itself
# talks to the Engine API and needs no Compose). Ubuntu 22.04 and later:
# docker-compose-v2. Debian 13 and later: docker-compose is v2. Debian 12:
# no package; set WAVEMAP_COMPOSE_PLUGIN_URI/_SHA256 above (or install
# docker-ce and docker-compose-plugin from download.docker.com instead of
# docker.io).
if apt-cache show docker-compose-v2 >/dev/null 2>&1; then
	apt-get install -y -q docker-compose-v2
elif apt-cache show docker-compose 2>/dev/null | grep -q '^Version: 2\.'; then
	apt-get install -y -q docker-compose
elif [ -n "$WAVEMAP_COMPOSE_PLUGIN_URI" ]; then
	install -d -m 0755 /usr/local/lib/docker/cli-plugins
	plugin="$(mktemp)"
	fetch "$WAVEMAP_COMPOSE_PLUGIN_URI" "$plugin"
	echo "$WAVEMAP_COMPOSE_PLUGIN_SHA256  $plugin" | sha256sum --check --strict -
	install -m 0755 "$plugin" /usr/local/lib/docker/cli-plugins/docker-compose
	rm -f "$plugin"
fi
if docker compose version >/dev/null 2>&1; then
	log "$(docker compose version)"
else
	log "no Compose v2 on this host: \`docker compose\` will not work (Debian 12: set WAVEMAP_COMPOSE_PLUGIN_URI); the agent runs without it"
fi

# The Compose project definition the agent converges (host bootstrap owns it).
install -d -m 0755 /opt/wavemap /opt/wavemap/runtime /opt/wavemap/deployment
install -d -m 0700 /opt/wavemap/runtime/env
fetch "$WAVEMAP_COMPOSE_URI" /opt/wavemap/runtime/compose.yaml

# The agent package: checksum first, then apt resolves its dependencies.
deb="$(mktemp --suffix=.deb)"
fetch "$WAVEMAP_AGENT_DEB_URI" "$deb"
echo "$WAVEMAP_AGENT_DEB_SHA256  $deb" | sha256sum --check --strict -
chmod 0644 "$deb"
apt-get install -y -q "$deb"
rm -f "$deb"

# The runtime parameter contract, from the infrastructure outputs: the agent
# merges it with runtime.parameters and `config check` below validates it.
# Written whole (temp file, then rename), mode 0644: names and types only,
# never a value.
if [ -n "$WAVEMAP_RUNTIME_CONTRACT_URI" ]; then
	contract="$(mktemp /etc/wavemap-agent/.runtime-contract.XXXXXX)"
	fetch "$WAVEMAP_RUNTIME_CONTRACT_URI" "$contract"
	chmod 0644 "$contract"
	mv -f "$contract" /etc/wavemap-agent/runtime-contract.json
fi

# Host settings go into the conffile after install, so dpkg keeps them on
# upgrades. Every key and its default is listed (commented) in the file;
# for example, a second allowed registry (the host account's ECR needs no
# listing; a listed registry never gets the ECR token):
# sed -i 's|^#\[docker\]|[docker]|; s|^#allowed_registries = .*|allowed_registries = ["ghcr.io"]|' /etc/wavemap-agent/agent.toml
/usr/bin/wavemap-agent config check >/dev/null

# Run Command documents need SSM Agent 3.3.2746.0 or later (parameters as
# SSM_* environment variables). Ubuntu AMIs ship it as a snap that updates
# itself; say which version is here so a too-old agent shows in the log.
if command -v snap >/dev/null 2>&1; then
	snap list amazon-ssm-agent 2>/dev/null | tail -n 1 | awk '{print "wavemap user-data: SSM Agent " $2}' >&2 || true
fi

# The package enabled the unit but did not start it: start it now without
# blocking cloud-init (Type=notify: systemd waits for boot recovery, up to
# TimeoutStartSec, before it calls the service started).
systemctl daemon-reload
systemctl enable wavemap-agent.service
systemctl start --no-block wavemap-agent.service
log "wavemap-agent installed: $(/usr/bin/wavemap-agent --version)"
