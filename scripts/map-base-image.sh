#!/usr/bin/env bash
# Make the MAP's base image where the NVIDIA one cannot be pulled: Debian bookworm (minbase, made with
# mmdebstrap, else debootstrap) + Python 3.11 (python3, python3-venv) + jq (for the packager's
# `tools` script).
#
# The root file system is built once and cached as a tarball in $UAR_MAP_CACHE (default
# /var/cache/uar-map, outside the repository); `docker import` loads it when the daemon lacks the
# image. Nothing here runs at container run time. Needs root (mmdebstrap / debootstrap, installed
# with apt when missing) and a Docker daemon (DOCKER_HOST, see scripts/map-docker.sh).
#
# Environment: MAP_BASE_IMAGE (tag, default uar-map-base:bookworm-py311-1), UAR_MAP_CACHE,
# DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

BASE_IMAGE=${MAP_BASE_IMAGE:-uar-map-base:bookworm-py311-1}
CACHE=${UAR_MAP_CACHE:-/var/cache/uar-map}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TARBALL="$CACHE/${BASE_IMAGE//[:\/]/_}.tar.gz"

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "base image $BASE_IMAGE: present"
    exit 0
fi

apt_install() {  # apt_install PACKAGE: install a Debian package as root (quietly), updating lists once if needed
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "$1" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "$1" >/dev/null 2>&1; }
}

if [[ ! -s "$TARBALL" ]]; then
    # mmdebstrap (apt underneath: parallel downloads, one dpkg pass) took 3-4 min here against
    # 4-13 min for debootstrap on the same loaded machine; debootstrap is the fallback.
    tool=mmdebstrap
    command -v mmdebstrap >/dev/null || apt_install mmdebstrap || tool=debootstrap
    if [[ $tool == debootstrap ]] && ! command -v debootstrap >/dev/null; then
        apt_install debootstrap || { echo "neither mmdebstrap nor debootstrap can be installed" >&2; exit 1; }
    fi
    mkdir -p "$CACHE"
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    echo "$tool bookworm (minbase + python3) into $root"
    if [[ $tool == mmdebstrap ]]; then
        mmdebstrap --mode=root --variant=minbase --include=python3,python3-venv,jq bookworm "$root" \
            "$MIRROR" > "$CACHE/bootstrap.log" 2>&1 || { tail -20 "$CACHE/bootstrap.log" >&2; exit 1; }
    else
        debootstrap --variant=minbase --include=python3,python3-venv,jq bookworm "$root" "$MIRROR" \
            > "$CACHE/bootstrap.log" 2>&1 || { tail -20 "$CACHE/bootstrap.log" >&2; exit 1; }
    fi
    # Nothing the image needs at run time: package caches and lists, docs, man pages, locales.
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
    if [[ -d "$root/usr/share/locale" ]]; then
        find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'en*' -exec rm -rf {} +
    fi
    chmod 0755 "$root"  # the image's / (mktemp made it 0700)
    tar --numeric-owner -C "$root" -czf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
fi

echo "docker import $TARBALL -> $BASE_IMAGE"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$TARBALL" "$BASE_IMAGE" >/dev/null
