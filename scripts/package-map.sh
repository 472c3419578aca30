#!/usr/bin/env bash
# Build the MONAI Application Package (MAP) image of the UAR report app: uar-report-node-map:<version>.
#
# 1. The real MAP packager, holoscan-cli 4.2.0 (the last release that has one, platform.md §0.1,
#    §1.7), runs in its own venv (default .venv-package/, git-ignored by a .gitignore written inside
#    it) beside --no-deps copies of holoscan-cu13 and monai-deploy-app-sdk at the versions the app
#    runs on (the packager reads the Holoscan version from the installed package and refuses
#    versions missing from its artifact manifest, so it gets our own, build/map/artifacts.json).
#    It generates app.json, pkg.json, the app config, its `tools` script and its Dockerfile. Its
#    image build needs `docker buildx` and nvcr.io; here `docker` is scripts/map/capture-context.sh,
#    which copies the generated build context to $MAP_STAGE/packager and stops the packager.
# 2. With MAP_BUILD=1 (the default) the image is built from that context with scripts/map/Dockerfile
#    (classic builder) on a self-made Debian bookworm + Python 3.11 base (scripts/map-base-image.sh),
#    installing the app's runtime requirements with `pip --no-index` from a wheelhouse made on the
#    host with pip (same indexes and find-links as the project venv, so the same CPU torch wheel)
#    and served on 127.0.0.1:$MAP_WHEELS_PORT during the build only (`docker build --network host`).
#    A Docker daemon: $DOCKER_HOST or the system one when it answers, else a private one
#    (scripts/map-docker.sh), stopped again at the end if this script started it. The base image,
#    the wheelhouse and the packager venv are made in parallel and cached.
#
# Environment: MAP_TAG (default uar-report-node-map:<version>), MAP_MODELS (folder of model
# subfolders, or one .safetensors file; default: the embedded default model as models/uar-default),
# MAP_STAGE (default build/map), MAP_BUILD (1/0), PACKAGER_VENV, PROJECT_PYTHON, UAR_MAP_CACHE
# (wheelhouse and base tarball cache, default /var/cache/uar-map), MAP_BASE_IMAGE, MAP_WHEELS_PORT
# (default 48231).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

CLI_VERSION=4.2.0
PACKAGER_VENV=${PACKAGER_VENV:-.venv-package}
PROJECT_PYTHON=${PROJECT_PYTHON:-.venv/bin/python}
STAGE=${MAP_STAGE:-build/map}
CACHE=${UAR_MAP_CACHE:-/var/cache/uar-map}
MAP_BUILD=${MAP_BUILD:-1}
BASE_IMAGE=${MAP_BASE_IMAGE:-uar-map-base:bookworm-py311-1}
WHEELS_PORT=${MAP_WHEELS_PORT:-48231}
t0=$(date +%s)
VERSION=$("$PROJECT_PYTHON" -c "import uar; print(uar.__version__)")
HOLOSCAN_VERSION=$("$PROJECT_PYTHON" -c "import importlib.metadata as m; print(m.version('holoscan-cu13'))")
SDK_VERSION=$("$PROJECT_PYTHON" -c "import importlib.metadata as m; print(m.version('monai-deploy-app-sdk'))")
MAP_TAG=${MAP_TAG:-uar-report-node-map:$VERSION}
CUDART_REQUIREMENT=nvidia-cuda-runtime==13.0.96
export DOCKER_BUILDKIT=0  # the classic builder: Debian's docker.io has no buildx

rm -rf "$STAGE"
mkdir -p "$STAGE/app/plugin" "$STAGE/models"
STAGE=$(cd "$STAGE" && pwd)

# The application folder: what `python3 /opt/holoscan/app` runs. The model is not embedded: it
# lives under /opt/holoscan/models (HOLOSCAN_MODEL_PATH).
# plugin/'s own modules (app, runner, settings, ...), not its node/ and viewer/ subpackages.
cp plugin/__main__.py "$STAGE/app/__main__.py"
cp plugin/*.py "$STAGE/app/plugin/"
rm "$STAGE/app/plugin/demo.py"  # drives the node and Orthanc, not part of the app
cp -r operators uar "$STAGE/app/"
find "$STAGE/app" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$STAGE/app/uar/default_model/"*.safetensors

if [[ -n "${MAP_MODELS:-}" && -f "$MAP_MODELS" ]]; then
    name=$(basename "$MAP_MODELS" .safetensors)
    mkdir -p "$STAGE/models/$name"
    cp "$MAP_MODELS" "$STAGE/models/$name/"
elif [[ -n "${MAP_MODELS:-}" ]]; then
    cp -r "$MAP_MODELS/." "$STAGE/models/"
else
    [[ -f uar/default_model/uar-default.safetensors ]] || {
        echo "no model: uar/default_model/uar-default.safetensors is missing (make train-default) and MAP_MODELS is unset" >&2
        exit 1
    }
    mkdir -p "$STAGE/models/uar-default"
    cp uar/default_model/uar-default.safetensors "$STAGE/models/uar-default/"
fi

# Runtime requirements: the project's pinned dependencies without the evaluation (pycocoevalcap)
# and DICOM-node (pynetdicom) ones, plus the CUDA runtime library that Holoscan links against
# (libcudart.so.13; the NVIDIA base image and this machine have it in /usr/local/cuda-13.0, the
# same wheel version). The SDK comes with them; the image installs only from the wheelhouse.
"$PROJECT_PYTHON" - "$STAGE/requirements.txt" "$CUDART_REQUIREMENT" <<'EOF'
import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
not_at_run_time = ("pycocoevalcap", "pynetdicom")
lines = [d for d in deps if not d.startswith(not_at_run_time)] + [sys.argv[2]]
with open(sys.argv[1], "w") as f:
    f.write("\n".join(lines) + "\n")
EOF
# The packager's own requirements (its standard image path installs them from PyPI, the SDK
# itself): the CPU torch index first, so that no CUDA torch is pulled.
{
    echo "--extra-index-url https://download.pytorch.org/whl/cpu"
    grep -v -e '^monai-deploy-app-sdk' -e '^nvidia-cuda-runtime' "$STAGE/requirements.txt"
} > "$STAGE/app/requirements.txt"

# Artifact manifest in the holoscan-cli format, keyed by the installed Holoscan version (CUDA 13).
"$PROJECT_PYTHON" - "$STAGE/artifacts.json" "$HOLOSCAN_VERSION" <<'EOF'
import json
import sys

path, version = sys.argv[1], sys.argv[2]
image = "nvcr.io/nvidia/cuda:13.0.0-runtime-ubuntu24.04"
holoscan_image = f"nvcr.io/nvidia/clara-holoscan/holoscan:v{version}-cuda13-dgpu"
manifest = {
    version: {
        "holoscan": {
            "debian-version": f"{version}.1-1",
            "wheel-version": version,
            "base-images": {"dgpu": image, "igpu": image},
            "build-images": {
                "igpu": {"jetson-agx-orin-devkit": holoscan_image, "igx-orin-devkit": holoscan_image,
                         "sbsa": holoscan_image},
                "dgpu": {"x64-workstation": holoscan_image, "igx-orin-devkit": holoscan_image,
                         "sbsa": holoscan_image, "clara-agx-devkit": holoscan_image},
                "cpu": {"x64-workstation": holoscan_image},
            },
        },
        "health-probes": {
            "linux/amd64": "https://github.com/grpc-ecosystem/grpc-health-probe/releases/download/v0.4.19/grpc_health_probe-linux-amd64",
            "linux/arm64": "https://github.com/grpc-ecosystem/grpc-health-probe/releases/download/v0.4.19/grpc_health_probe-linux-arm64",
        },
    }
}
with open(path, "w") as f:
    json.dump(manifest, f, indent=2)
EOF

# While the packager runs: a Docker daemon, the base image and the wheelhouse (cached, in the background).
started_daemon=0
jobs_pids=()
cleanup() {
    for pid in "${jobs_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [[ $started_daemon == 1 ]]; then bash scripts/map-docker.sh stop; fi
}
trap cleanup EXIT
WHEELS="$CACHE/wheels-$(sha256sum "$STAGE/requirements.txt" | cut -c1-16)"
if [[ "$MAP_BUILD" == 1 ]]; then
    if [[ -z "${DOCKER_HOST:-}" ]] && ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
        DOCKER_HOST=$(bash scripts/map-docker.sh start 2> "$STAGE/docker-start.txt")
        export DOCKER_HOST
        if grep -q started "$STAGE/docker-start.txt"; then started_daemon=1; fi
    fi
    bash scripts/map-base-image.sh > "$STAGE/base-image.log" 2>&1 &
    jobs_pids+=($!)
    # Wheelhouse on the host, one per requirements set; pip's own configuration (indexes,
    # find-links) supplies the CPU torch wheel the project venv uses. Offline first when cached.
    (
        if [[ ! -f "$WHEELS/.complete" ]]; then
            mkdir -p "$WHEELS"
            "$PROJECT_PYTHON" -m pip wheel -q --no-index --find-links "$WHEELS" -w "$WHEELS" \
                -r "$STAGE/requirements.txt" > /dev/null 2>&1 \
            || "$PROJECT_PYTHON" -m pip wheel -q --no-cache-dir --find-links "$WHEELS" -w "$WHEELS" \
                -r "$STAGE/requirements.txt"
            touch "$WHEELS/.complete"
        fi
    ) > "$STAGE/wheels.log" 2>&1 &
    jobs_pids+=($!)
fi

if [[ ! -x "$PACKAGER_VENV/bin/holoscan" ]]; then
    python3 -m venv "$PACKAGER_VENV"
    echo '*' > "$PACKAGER_VENV/.gitignore"
    "$PACKAGER_VENV/bin/pip" install -q "holoscan-cli==$CLI_VERSION"
    "$PACKAGER_VENV/bin/pip" install -q --no-deps "holoscan-cu13==$HOLOSCAN_VERSION" \
        "monai-deploy-app-sdk==$SDK_VERSION"
fi

# 1. The packager, with `docker` = the capture script.
mkdir -p "$STAGE/shim" "$STAGE/tmp"
ln -s "$REPO/scripts/map/capture-context.sh" "$STAGE/shim/docker"
args=("$STAGE/app" -c app.yaml -t "$MAP_TAG" --platform x86_64 --sdk monai-deploy
      --sdk-version "$SDK_VERSION" --source "$STAGE/artifacts.json" --version "$VERSION"
      -m "$STAGE/models" -l DEBUG)
echo "holoscan package ${args[*]}"
set +e
PATH="$STAGE/shim:$PATH" TMPDIR="$STAGE/tmp" MAP_CAPTURE="$STAGE/packager" \
    "$PACKAGER_VENV/bin/holoscan" package "${args[@]}" > "$STAGE/package.log" 2>&1
set -e
rm -rf "$STAGE/shim" "$STAGE/tmp"
for f in map/app.json map/pkg.json app.config tools Dockerfile; do
    [[ -f "$STAGE/packager/$f" ]] || {
        tail -30 "$STAGE/package.log" >&2
        echo "the packager did not generate $f (log: $STAGE/package.log)" >&2
        exit 1
    }
done
echo "packager: app.json, pkg.json, app.config, tools and Dockerfile in $STAGE/packager"
[[ "$MAP_BUILD" == 1 ]] || exit 0

# 2. The image.
wait_job() {  # wait_job PID LOG WHAT
    wait "$1" || { tail -20 "$2" >&2; echo "$3 failed (log: $2)" >&2; exit 1; }
}
wait_job "${jobs_pids[0]}" "$STAGE/base-image.log" "the base image"
wait_job "${jobs_pids[1]}" "$STAGE/wheels.log" "the wheelhouse"
jobs_pids=()
cat "$STAGE/base-image.log"

# Build context: the packager's files and our Dockerfile with app.json's environment.
CTX="$STAGE/context"
mkdir -p "$CTX/map"
cp "$STAGE/packager/map/app.json" "$STAGE/packager/map/pkg.json" "$CTX/map/"
cp "$STAGE/packager/app.config" "$STAGE/packager/tools" "$CTX/"
cp "$STAGE/packager/Dockerfile" "$CTX/packager.Dockerfile"
chmod 0755 "$CTX/tools"
cp -r "$STAGE/packager/app" "$CTX/app"
cp -r "$STAGE/packager/models" "$CTX/models"
cp "$STAGE/requirements.txt" "$CTX/"
"$PROJECT_PYTHON" - scripts/map/Dockerfile "$CTX/map/app.json" "$CTX/Dockerfile" <<'EOF'
import json
import sys

template, app_json, out = sys.argv[1:]
env = json.load(open(app_json))["environment"]
lines = "\n".join(f"ENV {k}={json.dumps(str(v))}" for k, v in sorted(env.items()))
text = open(template).read().replace("# @HOLOSCAN_ENV@", lines, 1)
open(out, "w").write(text)
EOF
title=$("$PROJECT_PYTHON" -c "import yaml; print(yaml.safe_load(open('app.yaml'))['application']['title'])")

# The wheelhouse on loopback for the build's pip (a fixed port keeps the pip layer cacheable).
"$PROJECT_PYTHON" -m http.server --bind 127.0.0.1 --directory "$WHEELS" "$WHEELS_PORT" \
    > "$STAGE/wheel-server.log" 2>&1 &
jobs_pids+=($!)
"$PROJECT_PYTHON" - "$WHEELS_PORT" <<'EOF'
import sys
import time
import urllib.request

for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2).close()
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit(f"no wheel server on 127.0.0.1:{sys.argv[1]} (port taken? set MAP_WHEELS_PORT)")
EOF

echo "docker build -t $MAP_TAG (base $BASE_IMAGE)"
docker build -t "$MAP_TAG" --network host \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "WHEELS_PORT=$WHEELS_PORT" \
    --build-arg "TITLE=$title" --build-arg "VERSION=$VERSION" \
    --build-arg "HOLOSCAN_SDK_VERSION=$HOLOSCAN_VERSION" \
    --build-arg "MONAI_DEPLOY_SDK_VERSION=$SDK_VERSION" \
    "$CTX" > "$STAGE/build.log" 2>&1 || { tail -40 "$STAGE/build.log" >&2; exit 1; }
docker image prune -f --filter "label=org.opencontainers.image.title=$title" >/dev/null
size=$(docker image inspect "$MAP_TAG" --format '{{.Size}}')
awk -v tag="$MAP_TAG" -v size="$size" -v s="$(( $(date +%s) - t0 ))" \
    'BEGIN { printf "MAP image %s: %.2f GB (%d bytes), built in %d s\n", tag, size / 1e9, size, s }'
