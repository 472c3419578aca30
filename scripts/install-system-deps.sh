#!/usr/bin/env bash
# Install the Debian packages the tests and the demo use as real DICOM peers:
# dcmtk (storescu/storescp/dcmdump/dsrdump), Orthanc with DICOMweb, dicom3tools (dciodvfy), Java (METEOR),
# openssl (TLS test certificates), docker.io and mmdebstrap (building and running the MAP image,
# tests/map; the daemon is started on demand by scripts/map-docker.sh).
# Quick when everything is already present; needs root (or sudo) otherwise.
set -euo pipefail
need=()
command -v storescu >/dev/null || need+=(dcmtk)
command -v Orthanc >/dev/null || need+=(orthanc orthanc-dicomweb)
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
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
# The Debian package starts a system Orthanc on 4242/8042; tests run their own on free ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then
  $SUDO systemctl stop orthanc || true
fi
