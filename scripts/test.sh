#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration (against real memcached, Redis and
# PostgreSQL processes, and a three-master Redis Cluster, that the tests start themselves on free
# loopback ports), compile-fail (trybuild) and doc tests.
#
# memcached, redis-server, redis-cli, Chromium (the blog's browser test,
# tests/blog_visibility.rs) and sqlite3 (writes from outside the application, tests/changes.rs)
# must be on PATH (or named by $MEMCACHED, $REDIS_SERVER, $REDIS_CLI, $CHROMIUM and $SQLITE3;
# Valkey's binaries work too). PostgreSQL's server (initdb, postgres, psql, pg_isready; the
# PostgreSQL tests start their own servers) is looked for in $PG_BIN if set, else in the newest
# /usr/lib/postgresql/VERSION/bin (where Debian keeps it, off PATH), else on PATH. If one is
# missing this script installs it with apt-get when it can (root on Debian/Ubuntu); otherwise
# it says how and stops. Varnish (varnishd, on PATH or in /usr/sbin) with the xkey module of
# varnish-modules runs in front of the tests' servers (tests/varnish_harness.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs a Debian package with apt-get (root on Debian/Ubuntu); otherwise says how and stops.
apt_install() {
  local binary="$1" package="$2" elsewhere="$3"
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "$binary not found: installing $package with apt-get" >&2
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  else
    cat >&2 <<MSG
$binary is not installed, and this script cannot install it here. Install it (Debian/Ubuntu:
sudo apt-get install $package; elsewhere $elsewhere),
then run this script again.
MSG
    exit 1
  fi
}

# Installs a Debian package with apt-get when a binary is missing from PATH.
need() {
  local binary="$1" package="$2"
  command -v "$binary" >/dev/null 2>&1 && return
  apt_install "$binary" "$package" "your system's memcached or redis/valkey package"
}

# The directory of PostgreSQL's server binaries, as the harness (src/postgres.rs) finds it:
# $PG_BIN, else the newest /usr/lib/postgresql/*/bin with a postgres in it, else the one of
# postgres on PATH; nothing if there is none.
pg_bin() {
  if [ -n "${PG_BIN:-}" ]; then
    echo "$PG_BIN"
    return
  fi
  local postgres
  while read -r postgres; do
    if [ -x "$postgres" ]; then
      dirname "$postgres"
      return
    fi
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin/postgres | sort -V -r)
  if command -v postgres >/dev/null 2>&1; then
    dirname "$(command -v postgres)"
  fi
}

# Debian keeps PostgreSQL's binaries off PATH, so `need` does not fit.
need_postgres() {
  if [ -n "${PG_BIN:-}" ] && [ ! -x "$PG_BIN/postgres" ]; then
    echo "PG_BIN is $PG_BIN, which has no postgres binary; unset it or fix it." >&2
    exit 1
  fi
  [ -n "$(pg_bin)" ] && return
  apt_install postgres postgresql \
    "your system's PostgreSQL server package, or set PG_BIN to its bin directory"
  if [ -z "$(pg_bin)" ]; then
    echo "postgresql is installed, but no /usr/lib/postgresql/*/bin/postgres appeared." >&2
    exit 1
  fi
}

# Varnish, and its xkey module (purging by tag), in Debian's varnish-modules.
need_varnish() {
  if ! command -v varnishd >/dev/null 2>&1 && [ ! -x /usr/sbin/varnishd ]; then
    apt_install varnishd varnish "your system's Varnish package (7.x)"
  fi
  if ! compgen -G "/usr/lib/*/varnish/vmods/libvmod_xkey.so" >/dev/null; then
    apt_install libvmod_xkey.so varnish-modules "varnish-modules, which has the xkey vmod"
  fi
}

need "${MEMCACHED:-memcached}" memcached
# redis-server brings redis-cli (redis-tools), which creates the test cluster.
need "${REDIS_SERVER:-redis-server}" redis-server
need "${REDIS_CLI:-redis-cli}" redis-tools
# openssl makes the certificates of the TLS test's server.
need openssl openssl
need "${CHROMIUM:-chromium}" chromium
# sqlite3 writes to a database from outside the application (tests/changes.rs).
need "${SQLITE3:-sqlite3}" sqlite3
# PostgreSQL: servers that the PostgreSQL tests start themselves.
need_postgres
# Varnish: caches the Varnish tests start themselves in front of their servers.
need_varnish
echo "using $(command -v "${MEMCACHED:-memcached}") ($("${MEMCACHED:-memcached}" -V))" >&2
echo "using $(command -v "${REDIS_SERVER:-redis-server}") ($("${REDIS_SERVER:-redis-server}" --version))" >&2
echo "using $(pg_bin)/postgres ($("$(pg_bin)/postgres" --version))" >&2
VARNISHD=$(command -v varnishd || echo /usr/sbin/varnishd)
echo "using $VARNISHD ($("$VARNISHD" -V 2>&1 | sed -n 1p))" >&2
# (Debian's Chromium launcher may complain on stderr about /dev/shm while it answers.)
echo "using $(command -v "${CHROMIUM:-chromium}") ($("${CHROMIUM:-chromium}" --version 2>/dev/null))" >&2

# The memcached, Redis, PostgreSQL and browser harnesses panic instead of skipping when CI is set.
export CI="${CI:-true}"
# Heavy tests (a 30 s load test, real rebuilds of the blog) are #[ignore]d so that a plain
# `cargo test` stays quick; this script runs them too.
cargo test --workspace "$@" -- --include-ignored
