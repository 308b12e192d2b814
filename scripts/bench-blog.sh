#!/usr/bin/env bash
# The blog under HTTP load, in one run (BENCHMARKS.md, "The blog under load"):
#
# 1. GET /articles/1 on memcached, pages rendered with the async API (the blog as it ships)
#    against the same blog rendering on tokio's blocking pool with the blocking API
#    (`--blocking-api`, how it ran before), and against `--no-cache`; then the same page
#    revalidated (`If-None-Match` with its current ETag: 304, no fragment rendered);
# 2. the latency of a vote (POST .../like with the visitor's CSRF token: its commit
#    invalidates, through the change log) on memcached, both ways;
# Every request is a signed-in visitor's (its cookie, signed in through the blog's own forms
# with curl), as a browser's would be.
# 3. behind Varnish (examples/blog/varnish.vcl, when varnishd is installed; VARNISH=0 skips it):
#    a visitor without a cookie's article page answered by Varnish, against the same page
#    answered by the blog (warm, 200), with the blog's, memcached's and Varnish's CPU;
# 4. the Django peer (../shared/peers/django-blog) under gunicorn on the same memcached: the same
#    article page (article 1, 50 Markdown comments) uncached, with Django's {% cache %} and with
#    django-cache-sweeper's algorithm. Its virtualenv is made in target/django-venv on first use
#    (pip: django pymemcache markdown gunicorn); DJANGO_PEER=0 skips it.
#
# Needs wrk and memcached (apt-get install wrk memcached). Everything listens on 127.0.0.1 and
# stops by itself. Usage: scripts/bench-blog.sh [seconds per run, default 10] [connections, default 16]
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-10}
CONNS=${2:-16}
# wrk needs a connection per thread.
THREADS=$((CONNS < 2 ? CONNS : 2))
for tool in wrk memcached; do
    command -v "$tool" >/dev/null || { echo "bench-blog: $tool is not installed" >&2; exit 1; }
done

cargo build --release --example blog
BLOG=${CARGO_TARGET_DIR:-target}/release/examples/blog
source scripts/lib.sh
start_memcached

# Starts the blog with "$@"; sets URL.
start_blog() {
    "$BLOG" --addr "${BLOG_ADDR:-127.0.0.1:0}" "$@" >"$WORK/out" 2>"$WORK/err" &
    BLOG_PID=$!
    PIDS+=("$BLOG_PID")
    for _ in $(seq 100); do
        URL=$(sed -n 's/^blog listening on //p' "$WORK/out")
        [ -n "$URL" ] && return
        sleep 0.1
    done
    echo "bench-blog: the blog did not start" >&2
    cat "$WORK/err" >&2
    exit 1
}

stop_blog() {
    kill "$BLOG_PID"
    wait "$BLOG_PID" 2>/dev/null || true
    BLOG_PID=
}

# The first CSRF token in the page "$1".
csrf_of() {
    local match
    match=$(grep -o -m1 'name="csrf" value="[0-9a-f]*"' <<<"$1")
    match=${match#*value=\"}
    echo "${match%\"}"
}

# Signs a visitor in through the blog's forms; sets COOKIE (the Cookie header's value), CSRF
# (its token) and ETAG (article 1's current ETag for it), and writes the vote script.
sign_in() {
    local jar="$WORK/jar" page token
    rm -f "$jar"
    # Read whole first, then parsed: a parser that stops early would cut curl's pipe.
    page=$(curl -sf -c "$jar" "$URL/signin?next=/")
    token=$(csrf_of "$page")
    curl -sf -b "$jar" -c "$jar" -o /dev/null --data "name=bench&csrf=$token&next=/" "$URL/signin"
    COOKIE=$(awk '$6 == "blog_visitor" {print $6 "=" $7}' "$jar")
    page=$(curl -sf -H "Cookie: $COOKIE" "$URL/articles/1")
    CSRF=$(csrf_of "$page")
    ETAG=$(curl -sf -o /dev/null -D - -H "Cookie: $COOKIE" "$URL/articles/1" | tr -d '\r' \
        | awk 'tolower($1) == "etag:" {print $2}')
    cat >"$WORK/like.lua" <<EOF
-- Likes comments 1..50 of article 1 in turn, as the signed-in visitor.
local n = 0
request = function()
    n = n % 50 + 1
    return wrk.format("POST", "/articles/1/comments/" .. n .. "/like",
        { ["Cookie"] = "$COOKIE", ["Content-Type"] = "application/x-www-form-urlencoded" },
        "csrf=$CSRF")
end
EOF
}

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# CPU time (clock ticks) of a process and its children (Varnish's manager and cache process).
tree_ticks() {
    local pid=$1 total child
    total=$(cpu_ticks "$pid")
    for child in $(cat "/proc/$pid/task/$pid/children" 2>/dev/null); do
        total=$((total + $(cpu_ticks "$child")))
    done
    echo "$total"
}

# Prints "<label> <requests/s> <p50> <p99>" for one wrk run of "$@", and, when BLOG_PID is set,
# the blog's and memcached's CPU per request (and Varnish's, when VARNISH_PID is set): on this
# machine they share two cores with wrk, where a deployment would give each a host of its own.
measure() {
    local label=$1
    shift
    local out blog0 mc0 v0=0
    [ -n "${BLOG_PID:-}" ] && { blog0=$(cpu_ticks "$BLOG_PID"); mc0=$(cpu_ticks "$MC_PID"); }
    [ -n "${VARNISH_PID:-}" ] && v0=$(tree_ticks "$VARNISH_PID")
    out=$(wrk --latency -t"$THREADS" -c"$CONNS" -d"${SECS}s" "$@")
    # A run with errors measured something else (a cache that was not there, a 500 page).
    if grep -q "Non-2xx or 3xx responses\|Socket errors" <<<"$out"; then
        echo "bench-blog: $label had errors:" >&2
        grep "Non-2xx or 3xx responses\|Socket errors" <<<"$out" >&2
    fi
    local rps p50 p99
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    local cpu=""
    if [ -n "${BLOG_PID:-}" ]; then
        local requests tick
        requests=$(awk '/requests in/ {print $1}' <<<"$out")
        tick=$(getconf CLK_TCK)
        cpu=$(awk -v b=$(($(cpu_ticks "$BLOG_PID") - blog0)) -v m=$(($(cpu_ticks "$MC_PID") - mc0)) \
            -v n="$requests" -v t="$tick" \
            'BEGIN { printf "   cpu/request: blog %4.0f us, memcached %3.0f us", b * 1e6 / t / n, m * 1e6 / t / n }')
        if [ -n "${VARNISH_PID:-}" ]; then
            cpu+=$(awk -v v=$(($(tree_ticks "$VARNISH_PID") - v0)) -v n="$requests" -v t="$tick" \
                'BEGIN { printf ", varnish %3.0f us", v * 1e6 / t / n }')
        fi
    fi
    printf '%-34s %10s req/s   p50 %8s   p99 %8s%s\n' "$label" "$rps" "$p50" "$p99" "$cpu"
}

run_mode() {
    local label=$1
    shift
    start_blog "$@"
    sign_in
    # Warm the page, then measure it, then its revalidations (304 when it has an ETag).
    wrk -t1 -c1 -d1s -H "Cookie: $COOKIE" "$URL/articles/1" >/dev/null
    measure "$label article page" -H "Cookie: $COOKIE" "$URL/articles/1"
    if [ -n "$ETAG" ]; then
        measure "$label revalidation (304)" -H "Cookie: $COOKIE" -H "If-None-Match: $ETAG" \
            "$URL/articles/1"
    fi
    measure "$label vote" -s "$WORK/like.lua" "$URL"
    stop_blog
}

echo "bench-blog: ${SECS}s per run, $CONNS connections, wrk -t$THREADS, memcached on 127.0.0.1:$MC_PORT"
run_mode "async (memcached)" --memcache "memcache://127.0.0.1:$MC_PORT"
run_mode "blocking pool (memcached)" --memcache "memcache://127.0.0.1:$MC_PORT" --blocking-api
run_mode "no cache" --no-cache

if [ "${VARNISH:-1}" != 0 ] && [ -x "$VARNISHD" ]; then
    BLOG_PORT=$(free_port)
    start_varnish "$BLOG_PORT" varnish
    VARNISH_PID=$V_PID
    BLOG_ADDR=127.0.0.1:$BLOG_PORT start_blog --memcache "memcache://127.0.0.1:$MC_PORT" \
        --varnish "127.0.0.1:$V_PORT"
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$V_PORT/articles/1" && break
        sleep 0.1
    done
    # Everyone's page (no cookie): from the blog, warm, then from Varnish, which keeps it.
    wrk -t1 -c1 -d1s "$URL/articles/1" >/dev/null
    measure "anyone's page from the blog (200)" "$URL/articles/1"
    wrk -t1 -c1 -d1s "http://127.0.0.1:$V_PORT/articles/1" >/dev/null
    measure "anyone's page from Varnish" "http://127.0.0.1:$V_PORT/articles/1"
    stop_blog
    kill "$VARNISH_PID"
    VARNISH_PID=
fi

if [ "${DJANGO_PEER:-1}" != 0 ]; then
    VENV=$(realpath -m "${CARGO_TARGET_DIR:-target}/django-venv")
    if [ ! -x "$VENV/bin/gunicorn" ]; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q django pymemcache markdown gunicorn
    fi
    DJ_PORT=$(free_port)
    (cd scripts && BLOG_CACHE=memcached BLOG_MEMCACHED=127.0.0.1:$MC_PORT \
        exec "$VENV/bin/gunicorn" -w 2 -b "127.0.0.1:$DJ_PORT" --log-level warning \
        django_peer_wsgi:application) &
    PIDS+=($!)
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$DJ_PORT/nocache/articles/1" && break
        sleep 0.2
    done
    for variant in nocache djangocache sweeper; do
        wrk -t1 -c1 -d1s "http://127.0.0.1:$DJ_PORT/$variant/articles/1" >/dev/null
        measure "django $variant (gunicorn -w 2)" "http://127.0.0.1:$DJ_PORT/$variant/articles/1"
    done
fi
