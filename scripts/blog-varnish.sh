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
VARNISHD=$(command -v varnishd || echo /usr/sbin/varnishd)
for tool in "$VARNISHD" memcached; do
    command -v "$tool" >/dev/null || { echo "blog-varnish: $tool is not installed" >&2; exit 1; }
done

cargo build --release --example blog
BLOG=${CARGO_TARGET_DIR:-target}/release/examples/blog
WORK=$(mktemp -d)
# Readable by varnishd's unprivileged workers, which compile the VCL written there.
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

MC_PORT=$(free_port)
memcached -l 127.0.0.1 -p "$MC_PORT" -m 256 -U 0 ${EUID:+$([ "$EUID" = 0 ] && echo -u root)} &
PIDS+=("$!")

# Varnish first, pointed at the port the blog will take: the blog needs the caches' addresses
# to purge them.
BLOG_PORT=$(free_port)
sed "s/\.port = \"8000\"/.port = \"$BLOG_PORT\"/" examples/blog/varnish.vcl >"$WORK/blog.vcl"
PURGE=()
for i in $(seq "$CACHES"); do
    port=$(free_port)
    "$VARNISHD" -F -a "127.0.0.1:$port" -T "127.0.0.1:$(free_port)" -n "$WORK/varnish$i" \
        -f "$WORK/blog.vcl" -s malloc,256m >"$WORK/varnish$i.log" 2>&1 &
    PIDS+=("$!")
    PURGE+=(--varnish "127.0.0.1:$port")
    echo "varnish $i: http://127.0.0.1:$port (log $WORK/varnish$i.log)"
done

"$BLOG" --addr "127.0.0.1:$BLOG_PORT" --memcache "memcache://127.0.0.1:$MC_PORT" "${PURGE[@]}" "$@" &
PIDS+=("$!")
echo "memcached: 127.0.0.1:$MC_PORT; Ctrl-C stops everything"
wait
