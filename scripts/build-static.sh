#!/usr/bin/env bash
# Builds the `comfyume` binary statically linked (glibc, `+crt-static`), so
# one file runs on any x86-64 Linux with no shared libraries beside it, and
# checks that it really is static. Prints the binary's path.
#
# Why glibc and not musl: the musl target's standard library is not in the
# Rust toolchain this project builds with, and it can only be fetched from
# outside the package registries. A static glibc binary looks names up
# itself for `files` and `dns` in /etc/nsswitch.conf (the usual setting);
# other NSS modules (mdns, LDAP) are not loaded. Backends are best given by
# address or by a name in DNS or /etc/hosts.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# With an explicit --target, RUSTFLAGS reach only the binary's own code
# and its dependencies, not build scripts or proc macros (which must stay
# dynamic to be loaded by the compiler). `getrandom` finds the getrandom(2)
# call through dlsym, which a static binary cannot do, and would fall back
# to opening /dev/urandom (absent in a bare chroot): it is told to call
# getrandom(2) directly (Linux 3.17 and later).
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"" \
  cargo build --release --locked --target "$target" -p comfyume --bin comfyume >&2
bin="$CARGO_TARGET_DIR/$target/release/comfyume"

if readelf --program-headers "$bin" | grep -q INTERP \
  || readelf --dynamic "$bin" | grep -q NEEDED; then
  echo "build-static: $bin is not statically linked:" >&2
  readelf --dynamic "$bin" | grep NEEDED >&2 || true
  exit 1
fi
echo "$bin"
