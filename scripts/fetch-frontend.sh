#!/usr/bin/env bash
# Fetches the pinned ComfyUI web frontend (comfyui-frontend-package from PyPI)
# into ./frontend/, unless it is already there. The server serves
# frontend/comfyui_frontend_package/static as its web root.
#
#   scripts/fetch-frontend.sh [VERSION [DEST]]
#
# Another VERSION into another DEST is how scripts/check-frontend.sh tries
# a newer frontend without touching the pinned one.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${1:-1.48.7}
DEST=${2:-frontend}
if [ -f "$DEST/comfyui_frontend_package/static/index.html" ] && [ -d "$DEST/comfyui_frontend_package-$VERSION.dist-info" ]; then
  exit 0
fi
PY=$(command -v python3 || command -v python) || { echo "python3 with pip is needed to fetch the frontend" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "Fetching comfyui-frontend-package==$VERSION from PyPI..." >&2
"$PY" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "comfyui-frontend-package==$VERSION"
wheel=$(ls "$tmp"/comfyui_frontend_package-"$VERSION"-*.whl)
rm -rf "$DEST.partial"
"$PY" -m zipfile -e "$wheel" "$DEST.partial"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "Frontend $VERSION ready in $DEST/comfyui_frontend_package/static" >&2
