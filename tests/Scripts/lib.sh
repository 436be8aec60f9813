# Helpers for the btests; sourced by test scripts. Every wait is bounded.

# zeek_offline TRACE DIR [ARGS...]: zeek -r TRACE in DIR.
zeek_offline() {
    local trace=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    (cd "$dir" && timeout 120 zeek -r "$trace" allow_network_time_forward=F "$@" >stdout 2>stderr)
}

# zeek_live PORT DIR [ARGS...]: zeek -i pcapovertcp::127.0.0.1:PORT in DIR,
# until the stream ends.
zeek_live() {
    local port=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    (cd "$dir" && timeout 120 zeek -i "pcapovertcp::127.0.0.1:$port" allow_network_time_forward=F PcapOverTcp::reconnect=F "$@" >stdout 2>stderr)
}

# serve_nc FILE: serves FILE once with netcat; prints the port.
serve_nc() {
    local port
    port=$(free-port)
    nc -N -l 127.0.0.1 "$port" <"$1" >/dev/null 2>&1 &
    wait-listen "$port" 10 || return 1
    echo "$port"
}

# serve_tool FILE [ARGS...]: serves FILE to one client with
# pcapovertcp-serve (ARGS: more of its options); prints the port.
serve_tool() {
    local pf file=$1
    shift
    pf=$(mktemp -u "$PWD/port.XXXXXX")
    # Not on our stdout: $(serve_tool ...) would wait for the server to exit.
    "$SERVE" --listen 127.0.0.1:0 --port-file "$pf" --clients 1 "$@" "$file" >/dev/null 2>&1 &
    read_port_file "$pf"
}

# read_port_file PF: waits (10 s at most) for a server to write its port to
# PF; prints it.
read_port_file() {
    for _ in $(seq 500); do
        [ -s "$1" ] && break
        sleep 0.02
    done
    [ -s "$1" ] || return 1
    cat "$1"
    rm -f "$1"
}

# compare_trace SERVER TRACE: zeek -r vs. zeek -i over SERVER (serve_nc or
# serve_tool); prints one line; returns non-zero on any difference.
compare_trace() {
    local server=$1 trace=$2 name port
    name=$(echo "${trace#"$TRACES"/}" | tr / _)
    if ! zeek_offline "$trace" "offline-$name"; then
        echo "$name: rejected by zeek -r: $(grep -m1 -i error "offline-$name/stderr")"
        return 0
    fi
    port=$($server "$trace") || { echo "$name: server did not start"; return 1; }
    if ! zeek_live "$port" "live-$name"; then
        echo "$name: zeek -i failed: $(tail -1 "live-$name/stderr")"
        return 1
    fi
    if compare-logs "offline-$name" "live-$name" >"diff-$name"; then
        echo "$name: identical"
    else
        echo "$name: DIFFERENT"
        cat "diff-$name"
        return 1
    fi
}

# compare_all_traces SERVER: compare_trace for every shared trace.
compare_all_traces() {
    local status=0 trace
    for trace in $(find "$TRACES" -type f \( -name '*.pcap' -o -name '*.pcapng' -o -name '*.cap' \) | sort); do
        compare_trace "$1" "$trace" || status=1
    done
    return $status
}

# stream_server [OPTIONS] FILE...: starts tests/Scripts/stream-server on
# 127.0.0.1 in the background (see its options); prints the port. Its pid
# is in ./stream-server.pid.
stream_server() {
    local pf
    pf=$(mktemp -u "$PWD/port.XXXXXX")
    stream-server --listen 127.0.0.1:0 --port-file "$pf" "$@" >/dev/null 2>&1 &
    echo $! >stream-server.pid
    read_port_file "$pf"
}

# elapsed_since T0: seconds since T0 (from `date +%s.%N`), one decimal.
elapsed_since() {
    awk -v t0="$1" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }'
}

# wait_for_line FILE TEXT SECONDS: until FILE has a line containing TEXT;
# fails after SECONDS.
wait_for_line() {
    local i
    for i in $(seq $(($3 * 20))); do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# sigterm_within PID SECONDS: sends SIGTERM to PID (a child of this shell)
# and prints its exit status and whether it ended within SECONDS.
sigterm_within() {
    local t0 status took
    t0=$(date +%s.%N)
    kill -TERM "$1"
    wait "$1"
    status=$?
    took=$(elapsed_since "$t0")
    echo "status $status"
    if awk -v t="$took" -v limit="$2" 'BEGIN { exit !(t < limit) }'; then
        echo "ended within $2 s of SIGTERM"
    else
        echo "took $took s after SIGTERM"
    fi
}
