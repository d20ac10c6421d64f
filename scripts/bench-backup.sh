#!/usr/bin/env bash
# Backup figures on a synthetic room (50 participants x 10 outputs of
# 400 KB, 200 MB) to a folder, each a ratio to reading and hashing every
# file once with sha256sum (the least a verified backup must do), timed in
# the same run. Usage: scripts/bench-backup.sh [BINARY] (default:
# target/release/comfyume). Needs bc.
set -euo pipefail
BIN=$(realpath "${1:-target/release/comfyume}")
command -v bc >/dev/null || { echo "needs bc" >&2; exit 1; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
"$BIN" --data-dir data users add teacher --admin --password teacher-secret-pw >/dev/null
for u in $(seq -w 1 50); do
  d=data/users/user$u/output
  mkdir -p "$d"
  for i in $(seq 1 10); do head -c 409600 /dev/urandom >"$d/img_$i.png"; done
done
sync
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
store="file://$W/store"
base=$(seconds bash -c "find data/users -type f -print0 | xargs -0 sha256sum")
first=$(seconds "$BIN" --data-dir data backup --to "$store")
again=$(seconds "$BIN" --data-dir data backup --to "$store")
sampled=$(seconds "$BIN" --data-dir data backup --to "$store" --verify-percent 5)
for u in 01 02 03 04 05; do head -c 409600 /dev/urandom >"data/users/user$u/output/img_1.png"; done
changed=$(seconds "$BIN" --data-dir data backup --to "$store")
verify=$(seconds "$BIN" --data-dir data backup verify --to "$store")
restore=$(seconds "$BIN" --data-dir restored restore --from "$store")
row() { printf '%-44s %6.2f s  %5.2fx\n' "$1" "$2" "$(echo "$2 / $base" | bc -l)"; }
row "sha256sum of every file, the baseline" "$base"
row "first backup (all uploaded, all read back)" "$first"
row "again, nothing changed (all read back)" "$again"
row "again, nothing changed, --verify-percent 5" "$sampled"
row "5 files changed" "$changed"
row "backup verify (all read back)" "$verify"
row "restore (each file checked, fsynced)" "$restore"
