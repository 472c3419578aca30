#!/bin/sh
# Stands in for `docker` while holoscan-cli 4.2.0 runs (scripts/package-map.sh puts it on PATH as
# `docker`). The packager calls docker only after it has written its build context (map/app.json,
# map/pkg.json, app.config, tools, Dockerfile, app/, models/) into $TMPDIR/holoscan_tmp*; this copies
# that context to $MAP_CAPTURE and fails, so the packager stops before `docker buildx`.
set -eu
for ctx in "${TMPDIR:?}"/holoscan_tmp*; do
    [ -f "$ctx/Dockerfile" ] || continue
    mkdir -p "${MAP_CAPTURE:?}"
    cp -a "$ctx/." "$MAP_CAPTURE/"
    echo "capture-context: packager build context copied to $MAP_CAPTURE; stopping before docker buildx" >&2
    exit 125
done
echo "capture-context: no packager build context under $TMPDIR" >&2
exit 125
