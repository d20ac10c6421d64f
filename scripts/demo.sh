#!/usr/bin/env bash
# The demo: builds ComfyUME, fetches the frontend if needed, and serves a
# workshop on http://127.0.0.1:8188 with demo accounts (printed below) and
# the built-in GPU simulator. Extra arguments go to `comfyume serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-frontend.sh
if ! command -v cargo >/dev/null; then
  echo "cargo (Rust) is needed: https://rustup.rs" >&2
  exit 1
fi
cargo build --release --locked
exec target/release/comfyume serve --demo \
  --data-dir "${COMFYUME_DATA_DIR:-demo-data}" \
  --frontend-dir frontend/comfyui_frontend_package/static \
  --templates-dir demo/templates \
  "$@"
