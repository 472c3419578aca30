#!/usr/bin/env bash
# Make the MAP's base image where the NVIDIA one cannot be pulled: Debian bookworm (debootstrap
# minbase) + Python 3.11 (python3, python3-venv) + jq (read by the packager's `tools` script).
#
# The root file system is built once and cached as a tarball in $UAR_MAP_CACHE (default
# /var/cache/uar-map, outside the repository); `docker import` loads it when the daemon lacks the
# image. Nothing here runs at container run time. Needs root (debootstrap, installed with apt when
# missing) and a Docker daemon (DOCKER_HOST, see scripts/map-docker.sh).
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

if [[ ! -s "$TARBALL" ]]; then
    if ! command -v debootstrap >/dev/null; then
        echo "installing debootstrap" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap \
            >/dev/null 2>&1 || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends debootstrap >/dev/null; }
    fi
    mkdir -p "$CACHE"
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap bookworm (minbase + python3) into $root"
    debootstrap --variant=minbase --include=python3,python3-venv,jq bookworm "$root" "$MIRROR" \
        > "$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    # Nothing the image needs at run time: package caches and lists, docs, man pages, locales.
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'en*' -exec rm -rf {} +
    tar --numeric-owner -C "$root" -czf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
fi

echo "docker import $TARBALL -> $BASE_IMAGE"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$TARBALL" "$BASE_IMAGE" >/dev/null
