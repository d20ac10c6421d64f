#!/usr/bin/env bash
# Does another ComfyUI frontend work with this gateway? Runs the browser
# suite (e2e/) against comfyui-frontend-package==VERSION from PyPI instead
# of the pinned one, leaving the pinned one in place:
#
#   scripts/check-frontend.sh VERSION        (or COMFYUME_FRONTEND_VERSION=VERSION)
#
# Exit 0: every browser test passed with that frontend. Otherwise the
# failing steps say what broke, with screenshots in e2e/test-results/.
# The upgrade procedure is in README.md, "Upgrading the frontend".
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:-${COMFYUME_FRONTEND_VERSION:-}}
if [ -z "$version" ]; then
  echo "usage: scripts/check-frontend.sh VERSION (a comfyui-frontend-package release on PyPI)" >&2
  exit 2
fi
dest="frontend-check/$version"
scripts/fetch-frontend.sh "$version" "$dest"
[ -x /usr/bin/chromium ] || { echo "Debian's chromium is needed (scripts/test.sh installs it)" >&2; exit 1; }
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
cargo build --locked -p comfyume
echo "Running the browser suite against comfyui-frontend-package $version..." >&2
if COMFYUME_E2E_FRONTEND_DIR="$dest/comfyui_frontend_package/static" node --test e2e/; then
  echo "comfyui-frontend-package $version passes the browser suite." >&2
else
  echo "comfyui-frontend-package $version FAILS the browser suite (see above)." >&2
  exit 1
fi
