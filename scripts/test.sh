#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration (against real memcached processes that
# the tests start themselves on free loopback ports), compile-fail (trybuild) and doc tests.
#
# memcached must be on PATH (or named by $MEMCACHED). If it is missing this script installs it
# with apt-get when it can (root on Debian/Ubuntu); otherwise it says how and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v "${MEMCACHED:-memcached}" >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "memcached not found: installing it with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached >/dev/null
  else
    cat >&2 <<'MSG'
memcached is not installed, and this script cannot install it here.
Install it, then run this script again:
  Debian/Ubuntu: sudo apt-get install memcached
  Fedora:        sudo dnf install memcached
  macOS:         brew install memcached
(or point $MEMCACHED at a memcached binary)
MSG
    exit 1
  fi
fi
echo "using $(command -v "${MEMCACHED:-memcached}") ($("${MEMCACHED:-memcached}" -V))" >&2

# The memcached harness panics instead of skipping when CI is set.
export CI="${CI:-true}"
# Heavy tests (a 30 s load test, real rebuilds of the blog) are #[ignore]d so that a plain
# `cargo test` stays quick; this script runs them too.
cargo test --workspace "$@" -- --include-ignored
