# What the blog's scripts share (sourced, from the repository's root): a work directory that
# goes at exit with every process they started, free loopback ports, memcached, and Varnish in
# front of the blog.

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

VARNISHD=$(command -v varnishd || echo /usr/sbin/varnishd)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts memcached on a free port; sets MC_PORT and MC_PID.
start_memcached() {
    MC_PORT=$(free_port)
    # memcached refuses to run as root without -u.
    memcached -l 127.0.0.1 -p "$MC_PORT" -m 256 -U 0 ${EUID:+$([ "$EUID" = 0 ] && echo -u root)} &
    MC_PID=$!
    PIDS+=("$MC_PID")
}

# Starts Varnish with examples/blog/varnish.vcl on a free port, in front of the blog on port
# "$1" of 127.0.0.1 (its work directory and log named "$2"); sets V_PORT and V_PID.
start_varnish() {
    local blog_port=$1 name=$2
    sed "s/\.port = \"8000\"/.port = \"$blog_port\"/" examples/blog/varnish.vcl >"$WORK/$name.vcl"
    V_PORT=$(free_port)
    "$VARNISHD" -F -a "127.0.0.1:$V_PORT" -T "127.0.0.1:$(free_port)" -n "$WORK/$name" \
        -f "$WORK/$name.vcl" -s malloc,256m >"$WORK/$name.log" 2>&1 &
    V_PID=$!
    PIDS+=("$V_PID")
}
