"""What the viewer stack needs from outside the repository, fetched once into a cache folder.

* OHIF Viewer v3, the prebuilt static ``dist/`` of the npm package ``@ohif/app`` (:data:`OHIF_VERSION`),
  fetched with ``npm pack`` and unpacked (never ``npm install``-ed, never committed);
* ``puppeteer-core`` (:data:`PUPPETEER_VERSION`, npm; it downloads no browser) to drive Chromium;
* the Debian packages ``orthanc``, ``orthanc-dicomweb``, ``chromium`` and ``tesseract-ocr``, installed by
  ``scripts/install-system-deps.sh`` when missing.

The cache folder is ``$UAR_VIEWER_CACHE``, else ``.cache/viewer`` in the checkout (ignored by git).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
PUPPETEER_VERSION = "24.43.1"
REPO = Path(__file__).resolve().parents[2]
SYSTEM_DEPS = REPO / "scripts" / "install-system-deps.sh"
DICOMWEB_PLUGIN_DIRS = (
    Path("/usr/share/orthanc/plugins"),
    Path("/usr/lib/orthanc/plugins"),
    Path("/usr/local/share/orthanc/plugins"),
)
NPM_TIMEOUT_S = 600.0


class ViewerSetupError(RuntimeError):
    """A part of the viewer stack is missing and could not be set up (the message says how to fix it)."""


def cache_dir() -> Path:
    """The folder holding the OHIF ``dist/`` and ``puppeteer-core`` (created if needed)."""
    path = Path(os.environ.get("UAR_VIEWER_CACHE") or REPO / ".cache" / "viewer")
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_tool(*names: str, package: str) -> str:
    """Path of the first of ``names`` on ``PATH``; runs the system-deps script once if none is there.

    Raises :class:`ViewerSetupError` naming the Debian ``package`` when it still cannot be found.
    """
    for attempt in range(2):
        for name in names:
            path = shutil.which(name)
            if path is not None:
                return path
        if attempt == 0 and SYSTEM_DEPS.is_file():
            subprocess.run(["bash", str(SYSTEM_DEPS)], check=False)
    raise ViewerSetupError(f"{names[0]} not found: install the Debian package {package!r}")


def dicomweb_plugin() -> Path:
    """Path of Orthanc's DICOMweb plugin ``libOrthancDicomWeb.so`` (Debian ``orthanc-dicomweb``)."""
    for attempt in range(2):
        for folder in DICOMWEB_PLUGIN_DIRS:
            path = folder / "libOrthancDicomWeb.so"
            if path.is_file():
                return path
        if attempt == 0 and SYSTEM_DEPS.is_file():
            subprocess.run(["bash", str(SYSTEM_DEPS)], check=False)
    raise ViewerSetupError("libOrthancDicomWeb.so not found: install the Debian package 'orthanc-dicomweb'")


def _npm() -> str:
    return find_tool("npm", package="npm")


def ensure_ohif(cache: Path | None = None) -> Path:
    """The OHIF ``dist/`` folder (``index.html``, bundles, wasm codecs), fetched with ``npm pack`` once."""
    cache = cache or cache_dir()
    dist = cache / f"ohif-{OHIF_VERSION}" / "package" / "dist"
    if (dist / "index.html").is_file():
        return dist
    with tempfile.TemporaryDirectory(dir=cache, prefix="ohif-fetch-") as tmp:
        proc = subprocess.run(
            [_npm(), "pack", f"{OHIF_PACKAGE}@{OHIF_VERSION}", "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 1:
            raise ViewerSetupError(
                f"npm pack {OHIF_PACKAGE}@{OHIF_VERSION} failed: {proc.stderr.strip()[-500:]}"
            )
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(unpacked, filter="data")  # refuses absolute paths, "..", devices and links out
        if not (unpacked / "package" / "dist" / "index.html").is_file():
            raise ViewerSetupError(f"{OHIF_PACKAGE}@{OHIF_VERSION} has no dist/index.html")
        target = cache / f"ohif-{OHIF_VERSION}"
        shutil.rmtree(target, ignore_errors=True)
        unpacked.rename(target)
    return dist


def ensure_puppeteer(cache: Path | None = None) -> Path:
    """The ``node_modules`` folder holding ``puppeteer-core`` (installed with npm once)."""
    cache = cache or cache_dir()
    prefix = cache / f"puppeteer-core-{PUPPETEER_VERSION}"
    modules = prefix / "node_modules"
    if (modules / "puppeteer-core" / "package.json").is_file():
        return modules
    prefix.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [_npm(), "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent"]
        + ["--no-save", f"puppeteer-core@{PUPPETEER_VERSION}"],
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_S,
    )
    if proc.returncode != 0 or not (modules / "puppeteer-core").is_dir():
        raise ViewerSetupError(f"npm install puppeteer-core failed: {proc.stderr.strip()[-500:]}")
    return modules


def chromium() -> str:
    """Path of the Chromium binary (Debian ``chromium``)."""
    return find_tool("chromium", "chromium-browser", package="chromium")


def node_js() -> str:
    """Path of Node.js (runs the puppeteer script)."""
    return find_tool("node", "nodejs", package="nodejs")
