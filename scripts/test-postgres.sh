#!/usr/bin/env bash
# A private PostgreSQL server for the tests (the store's conformance suite
# and the several-replica tests): Debian's postgresql package, a throwaway
# cluster on a loopback port with trust authentication, nothing shared with
# a system cluster.
#
#   scripts/test-postgres.sh start DIR   prints its URL (postgres://...)
#   scripts/test-postgres.sh stop DIR
#
# Each test makes its own database in it (crates/gateway/src/store/testing.rs).
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$2

bin_dir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$found" ] && [ -x "$found/initdb" ] && echo "$found"
}

# The server refuses to run as root: as root it runs as Debian's postgres
# user, which then owns the cluster's folder.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$action" in
  start)
    bin=$(bin_dir || true)
    if [ -z "$bin" ]; then
      SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
      echo "Installing Debian's postgresql for the tests..." >&2
      $SUDO apt-get update -qq
      $SUDO apt-get install -y -qq postgresql >/dev/null
      bin=$(bin_dir)
    fi
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Durability is the tests' least concern: without fsync each test's
    # CREATE DATABASE takes milliseconds, not a disk flush.
    if ! as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null; then
      cat "$dir/server.log" >&2
      exit 1
    fi
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    bin=$(bin_dir) || exit 0
    [ -f "$dir/data/postmaster.pid" ] || exit 0
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  *) usage ;;
esac
