#!/usr/bin/env bash
# Makes local stand-ins for the public base images docker/Dockerfile and docker/compose.yaml
# name, for machines that reach Debian's package mirror but no image registry (the test machines
# of this project). docker/Dockerfile itself is not changed: it builds against these the way it
# builds against the public images.
#
#   sudo bash scripts/docker/make-stand-ins.sh
#
#   debian:bookworm-slim      debootstrap --variant=minbase bookworm, imported
#   rust:<X.Y>-slim-bookworm  that, plus gcc and libc6-dev (as the public image has), and this
#                             machine's own Rust toolchain in /usr/local (X.Y: the Dockerfile's
#                             RUST_VERSION, which must be this machine's rustc)
#   postgres:15               that, plus Debian's postgresql-15 and an entrypoint that honours
#                             POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA and PGPORT
#                             the way the official image's does
#   nvidia/cuda:<V>-devel-<U> debian:bookworm-slim under docker/Dockerfile.cuda's base name (no
#                             CUDA: enough for the stages before the CUDA build)
#
# Each image carries the label org.muscle.stand-in; an image of the same name without it (a
# public one pulled earlier) is left alone. Images that exist are kept, so a second run takes a
# second; MUSCLE_STAND_INS_REBUILD=1 makes them again. Needs root (debootstrap), a running
# dockerd, and debootstrap (apt-get install debootstrap).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/scripts/docker"
label=org.muscle.stand-in

for tool in docker debootstrap rustc; do
    command -v "$tool" >/dev/null || { echo "stand-ins: $tool is not installed" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "stand-ins: debootstrap needs root" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "stand-ins: no Docker engine answers (start dockerd)" >&2; exit 1; }

# Whether to (re)make image $1: not there, or a stand-in and a rebuild was asked for.
wanted() {
    local made
    made="$(docker image inspect --format "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null)" ||
        return 0
    if [ "$made" != "1" ]; then
        echo "stand-ins: $1 exists and is not a stand-in; kept"
        return 1
    fi
    [ "${MUSCLE_STAND_INS_REBUILD:-0}" = 1 ]
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if wanted debian:bookworm-slim; then
    echo "stand-ins: debian:bookworm-slim from debootstrap (about a minute)"
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    # As the public image: security updates listed, no package lists or caches kept.
    cat >"$work/rootfs/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    # What makes the public image slim: no documentation, manuals or translations installed, and
    # no downloaded packages or package caches kept after apt-get.
    cp "$here/stand-ins/dpkg-slim.cfg" "$work/rootfs/etc/dpkg/dpkg.cfg.d/docker"
    cp "$here/stand-ins/apt-clean.conf" "$work/rootfs/etc/apt/apt.conf.d/docker-clean"
    rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin \
        "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/usr/share/man/"* \
        "$work/rootfs/usr/share/info/"*
    find "$work/rootfs/usr/share/doc" -type f ! -name copyright -delete
    # The certificate authorities this machine adds to Debian's (an egress proxy's, say), so that
    # builds reach crates.io as the machine does; an image that installs ca-certificates trusts
    # them. The public image has none: it needs none where the network is not intercepted.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        mkdir -p "$work/rootfs/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$work/rootfs/usr/local/share/ca-certificates/"
    fi
    tar -C "$work/rootfs" -c . | docker import \
        --change "LABEL $label=1" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
    rm -rf "$work/rootfs"
fi

rust_version="$(sed -n 's/^ARG RUST_VERSION=//p' "$repo/docker/Dockerfile")"
machine_version="$(rustc --version | cut -d' ' -f2)"
case "$machine_version" in
"$rust_version" | "$rust_version".*) ;;
*)
    echo "stand-ins: docker/Dockerfile builds with Rust $rust_version, this machine has $machine_version" >&2
    exit 1
    ;;
esac
if wanted "rust:$rust_version-slim-bookworm"; then
    echo "stand-ins: rust:$rust_version-slim-bookworm from this machine's toolchain ($machine_version)"
    mkdir -p "$work/rust/toolchain"
    sysroot="$(rustc --print sysroot)"
    # The compiler, cargo and the standard library; not the documentation (share/).
    cp -a "$sysroot/bin" "$sysroot/lib" "$sysroot/libexec" "$work/rust/toolchain/"
    cp "$here/stand-ins/rust.Dockerfile" "$work/rust/Dockerfile"
    docker build --network host --label "$label=1" -t "rust:$rust_version-slim-bookworm" "$work/rust" \
        >"$work/rust.log" 2>&1 || { tail -30 "$work/rust.log" >&2; exit 1; }
fi

if wanted postgres:15; then
    echo "stand-ins: postgres:15 from Debian's postgresql-15"
    mkdir -p "$work/postgres"
    cp "$here/stand-ins/postgres.Dockerfile" "$work/postgres/Dockerfile"
    cp "$here/stand-ins/postgres-entrypoint.sh" "$work/postgres/docker-entrypoint.sh"
    docker build --network host --label "$label=1" -t postgres:15 "$work/postgres" \
        >"$work/postgres.log" 2>&1 || { tail -30 "$work/postgres.log" >&2; exit 1; }
fi
# docker/Dockerfile.cuda's base: a Debian stand-in lets the stages before CUDA is needed build
# (tests/docker builds up to its planner stage); no CUDA toolkit is in it.
cuda_base="nvidia/cuda:$(sed -n 's/^ARG CUDA_VERSION=//p' "$repo/docker/Dockerfile.cuda")-devel-$(sed -n 's/^ARG UBUNTU=//p' "$repo/docker/Dockerfile.cuda")"
if wanted "$cuda_base"; then
    docker tag debian:bookworm-slim "$cuda_base"
fi
echo "stand-ins: ready: debian:bookworm-slim rust:$rust_version-slim-bookworm postgres:15 $cuda_base (Debian, no CUDA)"
