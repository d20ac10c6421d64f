#!/usr/bin/env bash
# The whole test suite: formatting and lints, the Rust unit and integration
# tests (real servers on loopback ports), then the browser end-to-end tests
# (Debian's Chromium driven by playwright-core against the real frontend).
# Installs what it needs: the pinned frontend (pip), Chromium and
# PostgreSQL (apt), and the e2e npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# The suite's own knob, taken out of the environment: the gateway reads
# every COMFYUME_* variable as configuration, and refuses unknown ones.
fuzz_seconds="${COMFYUME_FUZZ_SECONDS:-60}"
unset COMFYUME_FUZZ_SECONDS

scripts/fetch-frontend.sh

# Debian packages: Chromium for the browser tests, systemd-analyze for the
# unit file's check, CA certificates for the static binary's smoke test.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v systemd-analyze >/dev/null || missing+=(systemd)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "Installing Debian's ${missing[*]} for the tests..." >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

(cd e2e && npm ci --no-audit --no-fund --loglevel=error)

# The S3-compatible server of the backup tests and of participants' files
# in a bucket: moto (PyPI) in server mode, from
# a virtualenv kept between runs (crates/gateway/tests/s3/moto_server.py).
moto_env="${TMPDIR:-/tmp}/comfyume-test-tools/moto"
if ! "$moto_env/bin/python" -c 'import moto.server' 2>/dev/null; then
  echo "Installing moto (an S3-compatible server) for the backup tests..." >&2
  python3 -m venv "$moto_env"
  "$moto_env/bin/pip" install -q --disable-pip-version-check "moto[server]==5.2.6"
fi
export TEST_MOTO_PYTHON="$moto_env/bin/python"
# A 4 MiB filesystem for the backup test of a full disk (mounting needs
# root; without it that test says it was skipped).
if [ "$(id -u)" = 0 ]; then
  small_disk="${TMPDIR:-/tmp}/comfyume-small-disk"
  mkdir -p "$small_disk"
  mountpoint -q "$small_disk" || mount -t tmpfs -o size=4m tmpfs "$small_disk"
  find "$small_disk" -mindepth 1 -delete
  export TEST_SMALL_DISK_DIR="$small_disk"
fi

# A private PostgreSQL server (Debian's package, a throwaway cluster on a
# loopback port) for the store's conformance suite and the several-gateway
# tests; stopped when the suite ends, however it ends.
postgres_dir="${TMPDIR:-/tmp}/comfyume-test-tools/postgres"
jail=""
on_exit() {
  scripts/test-postgres.sh stop "$postgres_dir" || true
  [ -z "$jail" ] || rm -rf "$jail"
}
trap on_exit EXIT
TEST_POSTGRES_URL=$(scripts/test-postgres.sh start "$postgres_dir")
export TEST_POSTGRES_URL
echo "PostgreSQL for the tests: $TEST_POSTGRES_URL" >&2

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
  # The gateway tests once more with every gateway on PostgreSQL: the rest
  # of the code must not know which database runs. Left out: what works
  # on an SQLite file by design (backups, and the CLI commands the
  # backup, export and account tests run against the data directory).
  TEST_DATABASE=postgres cargo test --locked -p comfyume --test integration -- \
    --skip backup:: --skip cli:: --skip export::
  # And once more with participants' files in an S3-compatible bucket
  # (moto) instead of on disk: every route must answer as it does from
  # the disk. Left out: backups (they copy the database and the wall,
  # not a bucket; the disk guard guards the disk).
  TEST_FILES=bucket cargo test --locked -p comfyume --test integration -- \
    --skip backup::
)

# Against a stock ComfyUI v0.33.0, the server the gateway drives, when
# ../shared/tools/comfyui-cpu is beside the repository (CI always has it):
# crates/gateway/tests/integration/{stock_comfyui,differential,stock_faults}.rs,
# with the test nodes of
# crates/gateway/tests/stock/custom_nodes loaded into two of them, started
# side by side: one as it comes, one that also runs ComfyUME's backend
# extension (comfyui/comfyume_backend). Its first install fetches torch
# from PyPI (a few GB, some minutes).
comfyui_cpu="../shared/tools/comfyui-cpu"
if [ -x "$comfyui_cpu" ]; then
  "$comfyui_cpu" install
  free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  }
  plain_port=$(free_port)
  extended_port=$(free_port)
  while [ "$extended_port" = "$plain_port" ]; do extended_port=$(free_port); done
  plain=$(mktemp)
  extended=$(mktemp)
  stock="$alone/crates/gateway/tests/stock"
  printf 'comfyume_tests:\n  checkpoints: %s\n  custom_nodes: %s\n' \
    "$stock/models/checkpoints" "$stock/custom_nodes" >"$plain"
  printf 'comfyume_tests:\n  checkpoints: %s\n  custom_nodes: |\n    %s\n    %s\n' \
    "$stock/models/checkpoints" "$stock/custom_nodes" "$alone/comfyui" >"$extended"
  echo "Starting two stock ComfyUIs (ports $plain_port, $extended_port) for the tests against them..." >&2
  extended_pid_file=$(mktemp)
  "$comfyui_cpu" start "$extended_port" --extra-model-paths-config "$extended" >"$extended_pid_file" &
  starting=$!
  if ! plain_pid=$("$comfyui_cpu" start "$plain_port" --extra-model-paths-config "$plain"); then
    wait "$starting" && "$comfyui_cpu" stop "$(cat "$extended_pid_file")"
    echo "The stock ComfyUI did not start." >&2
    exit 1
  fi
  if ! wait "$starting"; then
    "$comfyui_cpu" stop "$plain_pid"
    echo "The stock ComfyUI with the backend extension did not start." >&2
    exit 1
  fi
  extended_pid=$(cat "$extended_pid_file")
  stop_both() {
    "$comfyui_cpu" stop "$plain_pid"
    "$comfyui_cpu" stop "$extended_pid"
  }
  # The differential tests compare the two; the fault tests start (and
  # kill -9) ComfyUIs of their own with the same tool.
  tool="$(cd "$(dirname "$comfyui_cpu")" && pwd)/comfyui-cpu"
  if ! (cd "$alone" && COMFYUME_STOCK_COMFYUI="http://127.0.0.1:$plain_port" \
      COMFYUME_STOCK_COMFYUI_WITH_EXTENSION="http://127.0.0.1:$extended_port" \
      COMFYUME_COMFYUI_CPU="$tool" \
      cargo test --locked -p comfyume --test integration -- stock_comfyui:: differential:: stock_faults::); then
    stop_both
    exit 1
  fi
  stop_both
  rm -f "$extended" "$extended_pid_file"
else
  echo "SKIPPED: the tests against a stock ComfyUI (no ../shared/tools/comfyui-cpu beside the repository)." >&2
fi

# Fuzzing (fuzz/README.md), also in the copy: each cargo-fuzz target runs
# for a bounded time from a corpus seeded afresh from the recorded traffic
# in fixtures/. A crash fails the suite and leaves its input in the copy's
# fuzz/artifacts/<target>/.
if [ "$fuzz_seconds" -gt 0 ]; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
  corpus="${TMPDIR:-/tmp}/comfyume-fuzz-corpus"
  rm -rf "$corpus"
  (
    cd "$alone/fuzz"
    cargo fmt -- --check
    python3 seed.py "$corpus"
    cargo fetch --locked
    cargo fuzz build -s none --target-dir "$CARGO_TARGET_DIR/fuzz"
    for target in $(cargo fuzz list); do
      echo "Fuzzing $target for ${fuzz_seconds}s..." >&2
      dict=()
      [ -f "$corpus/$target.dict" ] && dict=("-dict=$corpus/$target.dict")
      log="$corpus/$target.log"
      if ! cargo fuzz run -s none --target-dir "$CARGO_TARGET_DIR/fuzz" "$target" "$corpus/$target" -- \
          -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz target $target failed; its input is in $alone/fuzz/artifacts/$target/" >&2
        exit 1
      fi
      grep -E '^(Done|stat::peak_rss_mb)' "$log" >&2 || true
    done
  )
fi

# The package: the static binary (scripts/build-static.sh checks that it
# needs no shared library), started where nothing else exists (a chroot
# holding only it and the frontend) to answer /health; then the browser
# tests run against it, as an operator would ship it.
static_bin=$(cd "$alone" && scripts/build-static.sh)
if [ "$(id -u)" = 0 ]; then
  jail=$(mktemp -d)
  mkdir -m 1777 "$jail/tmp"
  # What the gateway image adds beside the binary (deploy/gateway/Dockerfile).
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$jail/etc/ssl/certs/ca-certificates.crt"
  cp "$static_bin" "$jail/comfyume"
  cp -r frontend/comfyui_frontend_package/static "$jail/frontend"
  exec 3< <(exec chroot "$jail" /comfyume serve --demo --data-dir /data --frontend-dir /frontend \
    --listen 127.0.0.1:0 2>&1)
  serve_pid=$!
  url=""
  while IFS= read -r line <&3; do
    echo "$line" >>"$jail/serve.log"
    if [[ $line =~ "ComfyUME is serving on "(http://[^ ]+) ]]; then url=${BASH_REMATCH[1]}; break; fi
  done
  cat <&3 >>"$jail/serve.log" &
  if [ -z "$url" ] || ! curl -fsS "$url/health"; then
    cat "$jail/serve.log" >&2
    echo "the static binary did not serve /health in an empty chroot" >&2
    exit 1
  fi
  echo " (the static binary, alone in a chroot)" >&2
  kill "$serve_pid"
  wait "$serve_pid" || { cat "$jail/serve.log" >&2; echo "the static binary did not stop cleanly" >&2; exit 1; }
else
  echo "Not root: the static binary's empty-chroot smoke test is skipped (the browser tests still run it)." >&2
fi

# The systemd unit (deploy/systemd/), pointed at the static binary, through
# systemd's own checker; a warning (an unknown key, say) fails too.
unit_dir=$(mktemp -d)
sed "s|/usr/local/bin/comfyume|$static_bin|" deploy/systemd/comfyume.service >"$unit_dir/comfyume.service"
if ! systemd-analyze verify "$unit_dir/comfyume.service" >"$unit_dir/verify.log" 2>&1 \
  || [ -s "$unit_dir/verify.log" ]; then
  cat "$unit_dir/verify.log" >&2
  echo "deploy/systemd/comfyume.service does not pass systemd-analyze verify" >&2
  exit 1
fi
rm -rf "$unit_dir"

# The browser tests; e2e/packs.test.mjs also needs a stock ComfyUI with the
# test custom node pack (the one of the tests above), else it says skipped.
e2e_comfyui=()
if [ -x "$comfyui_cpu" ]; then
  e2e_port=$(free_port)
  e2e_pid=$("$comfyui_cpu" start "$e2e_port" --extra-model-paths-config "$plain")
  e2e_comfyui=(COMFYUME_E2E_COMFYUI="http://127.0.0.1:$e2e_port")
fi
e2e_status=0
env "${e2e_comfyui[@]}" COMFYUME_BIN="$static_bin" node --test e2e/ || e2e_status=$?
if [ -x "$comfyui_cpu" ]; then
  "$comfyui_cpu" stop "$e2e_pid"
  rm -f "$plain"
fi
exit "$e2e_status"
