#!/usr/bin/env bash
# A private Docker daemon for building and running the MAP where no system daemon runs (CI, this
# machine): Debian's docker.io dockerd as root, on its own socket, without iptables or a bridge
# (containers run with --network none), its images kept under $UAR_MAP_CACHE/docker so they outlive
# the daemon. Installs docker.io when dockerd is missing (root, apt).
#
#   scripts/map-docker.sh start   # prints the DOCKER_HOST to use; reuses a running private daemon
#   scripts/map-docker.sh stop    # stops the private daemon (by the PID in its pid file)
#   scripts/map-docker.sh host    # prints the DOCKER_HOST of the private daemon
#
# `start` prints "started" or "running" on stderr, so callers stop only a daemon they started.
# Environment: UAR_MAP_CACHE (default /var/cache/uar-map), UAR_DOCKER_RUN (socket, pid file and
# exec root, default /run/uar-map-docker).
set -euo pipefail

CACHE=${UAR_MAP_CACHE:-/var/cache/uar-map}
RUN_DIR=${UAR_DOCKER_RUN:-/run/uar-map-docker}
SOCK="$RUN_DIR/docker.sock"
PIDFILE="$RUN_DIR/dockerd.pid"
HOST="unix://$SOCK"

answers() { DOCKER_HOST="$HOST" docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

case "${1:-}" in
    host)
        echo "$HOST"
        ;;
    start)
        if answers; then
            echo "running" >&2
            echo "$HOST"
            exit 0
        fi
        if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
            echo "installing docker.io" >&2
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q >/dev/null
            apt-get install -y -q --no-install-recommends docker.io >/dev/null
        fi
        mkdir -p "$RUN_DIR" "$CACHE/docker"
        setsid dockerd --iptables=false --ip-masq=false --bridge=none \
            --data-root "$CACHE/docker" --exec-root "$RUN_DIR/exec" --pidfile "$PIDFILE" \
            -H "$HOST" > "$RUN_DIR/dockerd.log" 2>&1 < /dev/null &
        for _ in $(seq 1 120); do
            answers && { echo "started" >&2; echo "$HOST"; exit 0; }
            sleep 0.5
        done
        echo "dockerd did not start; its log:" >&2
        tail -20 "$RUN_DIR/dockerd.log" >&2
        exit 1
        ;;
    stop)
        if [[ -s "$PIDFILE" ]]; then
            pid=$(cat "$PIDFILE")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 60); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
        fi
        ;;
    *)
        echo "usage: $0 start|stop|host" >&2
        exit 2
        ;;
esac
