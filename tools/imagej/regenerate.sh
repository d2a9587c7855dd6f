#!/usr/bin/env bash
# Regenerate the ImageJ reference fixtures in tests/fixtures/imagej/.
# Needs: Java, ImageJ 1.53t (Debian package `imagej`, /usr/share/java/ij.jar),
# xvfb-run (Debian package `xvfb`), and the project venv (.venv).
# Usage (from anywhere):  tools/imagej/regenerate.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="tests/fixtures/imagej"
py="${PYTHON:-.venv/bin/python}"
ij_jar="${IJ_JAR:-/usr/share/java/ij.jar}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. ROI zoo, non-area ROIs, broken files and the uint16 stack (roifile, seeded)
"$py" tools/imagej/make_roi_zoo.py "$out"
# 2. real ImageJ, headless: Create Mask per ROI, Multi Measure, re-save, version
xvfb-run -a java -jar "$ij_jar" -batch tools/imagej/zoo_masks.ijm "$root/$out/|$tmp/"
# 3. pack the masks into masks.npz and copy ImageJ's tables
"$py" tools/imagej/pack_imagej_output.py "$tmp" "$out"
