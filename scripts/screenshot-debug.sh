#!/usr/bin/env bash
# The picture in the README's "See the cache": the blog's article 1 with `?cache_debug=1` right
# after a vote, as headless Chromium draws it. The comment list and the voted comment missed
# (red), every other comment came from the cache (green).
#
# Builds and starts the blog (embedded cache, in-memory database, a free port), reads the
# article once so the cache holds it, likes its second comment (near the top, so the miss is
# in the picture), screenshots the debug page, and stops the blog.
#
# Needs curl and Chromium (Debian: apt-get install chromium; or point $CHROMIUM at one).
# Usage: scripts/screenshot-debug.sh [output, default docs/cache-debug.png]
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-docs/cache-debug.png}
CHROMIUM=${CHROMIUM:-chromium}
for tool in curl "$CHROMIUM"; do
    command -v "$tool" >/dev/null || { echo "screenshot-debug: $tool is not installed" >&2; exit 1; }
done

cargo build --example blog
BLOG=${CARGO_TARGET_DIR:-target}/debug/examples/blog
WORK=$(mktemp -d)
BLOG_PID=
cleanup() {
    if [ -n "$BLOG_PID" ]; then
        kill "$BLOG_PID" 2>/dev/null || true
        wait "$BLOG_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BLOG" --addr 127.0.0.1:0 >"$WORK/out" 2>"$WORK/err" &
BLOG_PID=$!
URL=
for _ in $(seq 100); do
    URL=$(sed -n 's/^blog listening on //p' "$WORK/out")
    [ -n "$URL" ] && break
    sleep 0.1
done
if [ -z "$URL" ]; then
    echo "screenshot-debug: the blog did not start" >&2
    cat "$WORK/err" >&2
    exit 1
fi

curl -fsS "$URL/articles/1" -o "$WORK/article.html"
COMMENT=$(grep -o 'id="comment-[0-9]*"' "$WORK/article.html" | sed -n 2p | tr -dc 0-9)
[ -n "$COMMENT" ] || { echo "screenshot-debug: article 1 has fewer than two comments" >&2; exit 1; }
curl -fsS -X POST "$URL/articles/1/comments/$COMMENT/like" -o /dev/null

mkdir -p "$(dirname "$OUT")"
# Chromium complains on stderr about D-Bus and the GPU, which a headless run has no use for.
"$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,1600 \
    --screenshot="$OUT" "$URL/articles/1?cache_debug=1" 2>"$WORK/chromium.log" || {
    cat "$WORK/chromium.log" >&2
    exit 1
}
[ -s "$OUT" ] || { echo "screenshot-debug: Chromium wrote no $OUT" >&2; cat "$WORK/chromium.log" >&2; exit 1; }
echo "screenshot-debug: $OUT ($(wc -c <"$OUT") bytes), after a like on comment $COMMENT"
