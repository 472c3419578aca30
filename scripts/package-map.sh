#!/usr/bin/env bash
# Build the MONAI Application Package (MAP) of the UAR report app with holoscan-cli 4.2.0.
#
# holoscan-cli 4.2.0 is the last release with the MAP packager (platform.md §0.1, §1.7). It lives in
# its own venv (default .venv-package/, git-ignored by a .gitignore written inside it) beside
# --no-deps copies of holoscan-cu13 and monai-deploy-app-sdk at the versions the app runs on: the
# packager reads the Holoscan version from the installed package and refuses versions missing from
# its artifact manifest, so we pass our own manifest (build/map/artifacts.json) keyed by that version.
#
# Steps: stage build/map/app (__main__.py + plugin/ + operators/ + uar/ + requirements.txt), write
# the manifest, run `holoscan package` with -l DEBUG (it prints app.json, pkg.json and the
# Dockerfile), log to $MAP_STAGE/package.log. The image build itself needs a Docker daemon with buildx.
#
# Environment: PACKAGER_VENV (venv path), MAP_STAGE (staging folder, default build/map), MAP_TAG (image tag, default uar-report-node:<version>),
# MAP_MODELS (model folder to package; default: none, the app uses its embedded default model),
# PROJECT_PYTHON (python of the project venv, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

CLI_VERSION=4.2.0
PACKAGER_VENV=${PACKAGER_VENV:-.venv-package}
PROJECT_PYTHON=${PROJECT_PYTHON:-.venv/bin/python}
STAGE=${MAP_STAGE:-build/map}
VERSION=$("$PROJECT_PYTHON" -c "import uar; print(uar.__version__)")
HOLOSCAN_VERSION=$("$PROJECT_PYTHON" -c "import importlib.metadata as m; print(m.version('holoscan-cu13'))")
SDK_VERSION=$("$PROJECT_PYTHON" -c "import importlib.metadata as m; print(m.version('monai-deploy-app-sdk'))")
MAP_TAG=${MAP_TAG:-uar-report-node:$VERSION}

if [[ ! -x "$PACKAGER_VENV/bin/holoscan" ]]; then
    python3 -m venv "$PACKAGER_VENV"
    echo '*' > "$PACKAGER_VENV/.gitignore"
    "$PACKAGER_VENV/bin/pip" install -q "holoscan-cli==$CLI_VERSION"
    "$PACKAGER_VENV/bin/pip" install -q --no-deps "holoscan-cu13==$HOLOSCAN_VERSION" \
        "monai-deploy-app-sdk==$SDK_VERSION"
fi

rm -rf "$STAGE"
mkdir -p "$STAGE/app"
cp plugin/__main__.py "$STAGE/app/__main__.py"
mkdir -p "$STAGE/app/plugin"
cp plugin/__init__.py plugin/app.py plugin/runner.py plugin/settings.py "$STAGE/app/plugin/"
cp -r operators uar "$STAGE/app/"
find "$STAGE/app" -name __pycache__ -prune -exec rm -rf {} +

# Runtime requirements: the project's pinned dependencies; the packager installs the SDK itself.
"$PROJECT_PYTHON" - "$STAGE/app/requirements.txt" <<'EOF'
import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
skip = ("monai-deploy-app-sdk",)
lines = ["--extra-index-url https://download.pytorch.org/whl/cpu"]
lines += [d for d in deps if not d.startswith(skip)]
with open(sys.argv[1], "w") as f:
    f.write("\n".join(lines) + "\n")
EOF

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

args=("$STAGE/app" -c app.yaml -t "$MAP_TAG" --platform x86_64 --sdk monai-deploy
      --sdk-version "$SDK_VERSION" --source "$STAGE/artifacts.json" --version "$VERSION" -l DEBUG)
if [[ -n "${MAP_MODELS:-}" ]]; then
    args+=(-m "$MAP_MODELS")
fi
echo "holoscan package ${args[*]}"
"$PACKAGER_VENV/bin/holoscan" package "${args[@]}" 2>&1 | tee "$STAGE/package.log"
