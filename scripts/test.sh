#!/usr/bin/env bash
# The whole test suite: formatting and lints, the Rust unit and integration
# tests (real servers on loopback ports), then the browser end-to-end tests
# (Debian's Chromium driven by playwright-core against the real frontend).
# Installs what it needs: the pinned frontend (pip), Chromium (apt), and the
# e2e npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-frontend.sh

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "Installing Debian's Chromium for the browser tests..." >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium >/dev/null
fi

(cd e2e && npm ci --no-audit --no-fund --loglevel=error)

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked --all-targets
cargo test --locked
COMFYUME_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/comfyume" node --test e2e/
