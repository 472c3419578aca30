#!/usr/bin/env bash
# Install the Debian packages the tests and the demo use as real DICOM peers:
# dcmtk (storescu/storescp/dcmdump/dsrdump), Orthanc with DICOMweb, dicom3tools (dciodvfy), Java (METEOR),
# openssl (TLS test certificates); for the viewer stack (`uar viewer`, tests/viewer): Chromium (headless,
# driven by npm puppeteer-core), Tesseract OCR (reads the PDF panel), Node.js + npm (fetch OHIF);
# docker.io and mmdebstrap (building and running the MAP image, tests/map; the daemon is started on
# demand by scripts/map-docker.sh).
# Quick when everything is already present; needs root (or sudo) otherwise.
set -euo pipefail
need=()
command -v storescu >/dev/null || need+=(dcmtk)
command -v Orthanc >/dev/null || need+=(orthanc orthanc-dicomweb)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v chromium >/dev/null || need+=(chromium)
command -v tesseract >/dev/null || need+=(tesseract-ocr tesseract-ocr-eng)
command -v npm >/dev/null || need+=(npm)
command -v dciodvfy >/dev/null || need+=(dicom3tools)
command -v java >/dev/null || need+=(default-jre-headless)
command -v openssl >/dev/null || need+=(openssl)
command -v dockerd >/dev/null || need+=(docker.io)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root or sudo to install: ${need[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
# The Debian package starts a system Orthanc on 4242/8042; tests run their own on free ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then
  $SUDO systemctl stop orthanc || true
fi
