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

# The Rust suite runs in a copy of the repository's own files (tracked, or
# new and not ignored), in a folder with nothing beside it: a test that
# reached outside the repository (say, into ../shared) fails here as it
# would in a fresh clone. The build reuses this checkout's target folder;
# the copy keeps its place (and the files their times) between runs, so
# builds stay incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
alone="${TMPDIR:-/tmp}/comfyume-alone/comfyume"
rm -rf "$alone"
mkdir -p "$alone"
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -xf - -C "$alone"
(
  cd "$alone"
  cargo fmt --all -- --check
  cargo clippy --locked --workspace --all-targets -- -D warnings
  cargo build --locked --workspace --all-targets
  cargo test --locked --workspace
)

COMFYUME_BIN="$CARGO_TARGET_DIR/debug/comfyume" node --test e2e/
