#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration (against real memcached processes that
# the tests start themselves on free loopback ports), compile-fail (trybuild) and doc tests.
#
# memcached and Chromium (the blog's browser test, tests/blog_visibility.rs) must be on PATH
# (or named by $MEMCACHED and $CHROMIUM). If one is missing this script installs it with apt-get
# when it can (root on Debian/Ubuntu); otherwise it says how and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_UPDATED=
# Installs the Debian package $2 when the command $1 is missing, if this is root with apt-get;
# fails if it is missing and cannot be installed.
install_missing() {
  command -v "$1" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] || return 1
  echo "$1 not found: installing $2 with apt-get" >&2
  if [ -z "$APT_UPDATED" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

if ! install_missing "${MEMCACHED:-memcached}" memcached; then
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
echo "using $(command -v "${MEMCACHED:-memcached}") ($("${MEMCACHED:-memcached}" -V))" >&2

if ! install_missing "${CHROMIUM:-chromium}" chromium; then
  cat >&2 <<'MSG'
Chromium is not installed, and this script cannot install it here.
Install it, then run this script again:
  Debian/Ubuntu: sudo apt-get install chromium
  Fedora:        sudo dnf install chromium
  macOS:         brew install --cask chromium
(or point $CHROMIUM at a Chromium or Chrome binary)
MSG
  exit 1
fi
# (Debian's launcher may complain on stderr about /dev/shm while it answers.)
echo "using $(command -v "${CHROMIUM:-chromium}") ($("${CHROMIUM:-chromium}" --version 2>/dev/null))" >&2

# The memcached and browser harnesses panic instead of skipping when CI is set.
export CI="${CI:-true}"
# Heavy tests (a 30 s load test, real rebuilds of the blog) are #[ignore]d so that a plain
# `cargo test` stays quick; this script runs them too.
cargo test --workspace "$@" -- --include-ignored
