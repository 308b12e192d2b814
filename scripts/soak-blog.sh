#!/usr/bin/env bash
# The blog's memory under load (BENCHMARKS.md, "Memory under a soak"): 16 connections reading
# GET /articles/1 with wrk plus a like every 50 ms, on memcached, with the database on a file;
# prints the resident memory (VmRSS) and the thread count of the blog process every 5 s, then
# their maxima.
#
# Needs wrk and memcached. Everything listens on 127.0.0.1 and stops by itself.
# Usage: scripts/soak-blog.sh [seconds, default 60] [connections, default 16]
# BLOG=path/to/blog runs that binary instead of building this checkout's (to compare builds).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-60}
CONNS=${2:-16}
for tool in wrk memcached curl; do
    command -v "$tool" >/dev/null || { echo "soak-blog: $tool is not installed" >&2; exit 1; }
done
if [ -z "${BLOG:-}" ]; then
    cargo build --release --example blog
    BLOG=${CARGO_TARGET_DIR:-target}/release/examples/blog
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
MC_PORT=$(free_port)
memcached -l 127.0.0.1 -p "$MC_PORT" -m 256 -U 0 $([ "$EUID" = 0 ] && echo -u root) &
PIDS+=("$!")

"$BLOG" --addr 127.0.0.1:0 --db "$WORK/blog.sqlite" --memcache "memcache://127.0.0.1:$MC_PORT" \
    >"$WORK/out" 2>"$WORK/err" &
BLOG_PID=$!
PIDS+=("$BLOG_PID")
for _ in $(seq 100); do
    URL=$(sed -n 's/^blog listening on //p' "$WORK/out")
    [ -n "$URL" ] && break
    sleep 0.1
done
[ -n "$URL" ] || { echo "soak-blog: the blog did not start" >&2; cat "$WORK/err" >&2; exit 1; }

rss() { awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$BLOG_PID/status"; }
threads() { awk '/^Threads/ {print $2}' "/proc/$BLOG_PID/status"; }
echo "soak-blog: idle: rss=$(rss) MB threads=$(threads)"

# A like every 50 ms, on the comments of article 1 in turn.
(
    n=0
    while true; do
        curl -s -o /dev/null -X POST "$URL/articles/1/comments/$((n % 50 + 1))/like"
        n=$((n + 1))
        sleep 0.05
    done
) &
PIDS+=("$!")
wrk -t 2 -c "$CONNS" -d "${SECS}s" "$URL/articles/1" >"$WORK/wrk" &
WRK_PID=$!
PIDS+=("$WRK_PID")

MAX_RSS=0
MAX_THREADS=0
ELAPSED=0
while kill -0 "$WRK_PID" 2>/dev/null; do
    sleep 1
    ELAPSED=$((ELAPSED + 1))
    R=$(rss); T=$(threads)
    [ "$R" -gt "$MAX_RSS" ] && MAX_RSS=$R
    [ "$T" -gt "$MAX_THREADS" ] && MAX_THREADS=$T
    [ $((ELAPSED % 5)) = 0 ] && echo "soak-blog: ${ELAPSED}s: rss=$R MB threads=$T"
done
grep -E "Requests/sec" "$WORK/wrk" | sed 's/^/soak-blog: /'
echo "soak-blog: max rss=$MAX_RSS MB, max threads=$MAX_THREADS, after: rss=$(rss) MB threads=$(threads)"
