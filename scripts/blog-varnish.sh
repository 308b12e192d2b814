#!/usr/bin/env bash
# The blog behind Varnish, by hand: memcached, the blog (release build) and N Varnish caches in
# front of it (examples/blog/varnish.vcl: keeps what everyone reads, purged by tag), each on a
# free loopback port. Prints where each is; Ctrl-C stops them all.
#
#   scripts/blog-varnish.sh [caches, default 1] [-- extra blog arguments]
#
# Then read a page as a visitor without a cookie, twice: the second is Varnish's
# (`x-varnish-cache: hit`); like a comment (sign in at /signin in a browser, through Varnish)
# and the page is purged from every cache:
#
#   curl -sI http://127.0.0.1:PORT/articles/1 | grep -i -e x-varnish-cache -e xkey -e cache-control
#
# Needs varnish, varnish-modules and memcached (apt-get install varnish varnish-modules memcached).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHES=${1:-1}
shift || true
[ "${1:-}" = "--" ] && shift
source scripts/lib.sh
for tool in "$VARNISHD" memcached; do
    command -v "$tool" >/dev/null || { echo "blog-varnish: $tool is not installed" >&2; exit 1; }
done

cargo build --release --example blog
BLOG=${CARGO_TARGET_DIR:-target}/release/examples/blog
start_memcached

# Varnish first, pointed at the port the blog will take: the blog needs the caches' addresses
# to purge them.
BLOG_PORT=$(free_port)
PURGE=()
for i in $(seq "$CACHES"); do
    start_varnish "$BLOG_PORT" "varnish$i"
    PURGE+=(--varnish "127.0.0.1:$V_PORT")
    echo "varnish $i: http://127.0.0.1:$V_PORT (log $WORK/varnish$i.log)"
done

"$BLOG" --addr "127.0.0.1:$BLOG_PORT" --memcache "memcache://127.0.0.1:$MC_PORT" "${PURGE[@]}" "$@" &
PIDS+=("$!")
echo "memcached: 127.0.0.1:$MC_PORT; Ctrl-C stops everything"
wait
