# The source's counters, scraped from Zeek's Prometheus endpoint
# (Telemetry::metrics_port) of a running `zeek -i`, once the stream has been
# consumed, match the stream: records_total is the trace's packet count,
# bytes_total its file size (pcapovertcp-serve sends the file as it is),
# Zeek's own zeek_net_* (policy/misc/stats.zeek, loaded by `local`) agree
# (received bytes = bytes_total less the pcap file header and 16 bytes of
# record header per packet), one connect, one disconnect and one outage
# (reconnect=T: the source stays open, waiting to reconnect, open 0), and
# buffer_capacity_bytes is PcapOverTcp::buffer_size. Two workers sharing one
# stream (?share=0/2, ?share=1/2): each one's records_total plus its
# other_share_total is the whole trace, and their records_total add up to
# it. A listening source labels its sender by IP address and its buffer by
# its interface.
# @TEST-REQUIRES: test -x "$SERVE" && test -f "$TRACES/http/bro.org.pcap" && test -f "$TRACES/tunnels/Teredo.pcap"
# @TEST-REQUIRES: command -v curl && command -v capinfos && command -v timeout
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
t0=$(date +%s.%N)
kill_pids_at_exit

# scrape PORT FILE: Zeek's metrics into FILE (left alone when the scrape
# fails).
scrape() {
    curl -s --max-time 5 "http://127.0.0.1:$1/metrics" >"$2.tmp" && mv "$2.tmp" "$2"
}

# value FILE NAME: the value of metric NAME (its first sample) in FILE.
value() {
    grep -E "^$2(\\{| )" "$1" 2>/dev/null | head -1 | awk '{print $NF}'
}

# scrape_until PORT FILE SECONDS NAME=VALUE...: scrapes until every NAME has
# VALUE; fails after SECONDS.
scrape_until() {
    local port=$1 file=$2 secs=$3 i cond ok
    shift 3
    for i in $(seq $((secs * 10))); do
        scrape "$port" "$file"
        ok=1
        for cond in "$@"; do
            [ "$(value "$file" "${cond%%=*}")" = "${cond#*=}" ] || ok=
        done
        [ -n "$ok" ] && return 0
        sleep 0.1
    done
    echo "after $secs s, still not $*"
    return 1
}

# show FILE PORT...: the pcapovertcp metrics of FILE, sorted, with PORT
# (each given) as PORT and the time connected (wall clock) as >0 or 0.
show() {
    local file=$1 p expr=""
    shift
    for p in "$@"; do
        expr="$expr -e s/:$p\\b/:PORT/g"
    done
    grep '^zeek_pcapovertcp_' "$file" | sort |
        awk '$1 ~ /^zeek_pcapovertcp_connected_seconds_total/ { $2 = ($2 > 0 ? ">0" : $2) } { print }' |
        sed $expr
}

# packets_of TRACE: its packet count.
packets_of() {
    capinfos -c -M "$1" | awk '/Number of packets/ {print $NF}'
}

# serve TRACE ARGS...: pcapovertcp-serve on 127.0.0.1 in the background
# (its pid added to pids); prints its port.
serve() {
    local pf file=$1
    shift
    pf=$(mktemp -u "$PWD/port.XXXXXX")
    "$SERVE" --listen 127.0.0.1:0 --port-file "$pf" "$@" "$file" >>serve.out 2>&1 &
    pids="$pids $!"
    read_port_file "$pf"
}

# zeek_bg DIR ARGS...: a live Zeek in DIR in the background (its pid added
# to pids, and in DIR/pid). `timeout --foreground` passes a SIGTERM on to
# Zeek alone: without it, timeout sends it to Zeek and then to its whole
# process group, and a second SIGTERM while Zeek waits for its log writers
# at shutdown can leave Zeek (8.2) spinning for ever.
zeek_bg() {
    local dir=$1
    shift
    mkdir -p "$dir"
    (cd "$dir" && exec timeout --foreground -k 5 120 zeek "$@" >stdout 2>stderr) &
    echo $! >"$dir/pid"
    pids="$pids $!"
}

# stop DIR: SIGTERM to the Zeek of zeek_bg DIR; waits for it.
stop() {
    kill -TERM "$(cat "$1/pid")" 2>/dev/null
    wait "$(cat "$1/pid")" 2>/dev/null
}

echo "=== one connect endpoint, the trace served once"
trace=$TRACES/http/bro.org.pcap
packets=$(packets_of "$trace")
size=$(stat -c %s "$trace")
echo "trace: $packets packets, $size bytes"
port=$(serve "$trace" --clients 1)
mp=$(free-port)
# No reconnection attempt while the test runs: another test's server may
# take the port by then.
zeek_bg one -i "pcapovertcp::127.0.0.1:$port" local Telemetry::metrics_port="$mp/tcp" \
    PcapOverTcp::buffer_size=8*1024*1024 PcapOverTcp::reconnect_min=10min PcapOverTcp::reconnect_max=10min
scrape_until "$mp" one/metrics 60 zeek_pcapovertcp_records_total="$packets" \
    zeek_net_received_packets_total="$packets" zeek_pcapovertcp_outages_total=1
show one/metrics "$port"
grep -E '^zeek_net_(received|dropped|link|filtered)_' one/metrics | sort
bytes=$(value one/metrics zeek_pcapovertcp_bytes_total)
records=$(value one/metrics zeek_pcapovertcp_records_total)
[ "$bytes" = "$size" ] && echo "bytes_total is the file size" || echo "bytes_total $bytes, file size $size"
expected=$((bytes - 24 - 16 * records))
net=$(value one/metrics zeek_net_received_bytes_total)
[ "$net" = "$expected" ] && echo "zeek_net_received_bytes_total is bytes_total - 24 - 16 * records_total" ||
    echo "zeek_net_received_bytes_total $net, expected $expected"
capacity=$(value one/metrics zeek_pcapovertcp_buffer_capacity_bytes)
[ "$capacity" = $((8 * 1024 * 1024)) ] && echo "buffer_capacity_bytes is PcapOverTcp::buffer_size" ||
    echo "buffer_capacity_bytes $capacity, PcapOverTcp::buffer_size $((8 * 1024 * 1024))"
echo "--- their types"
grep '^# TYPE zeek_pcapovertcp_' one/metrics | sort
stop one
grep -o 'warning.*connection lost.*' one/stderr | sed -e "s/:$port\\b/:PORT/g" -e 's/^warning in [^:]*: /warning: /'

echo "=== two workers sharing one stream (?share=0/2, ?share=1/2)"
trace=$TRACES/tunnels/Teredo.pcap
packets=$(packets_of "$trace")
echo "trace: $packets packets"
port=$(serve "$trace" --wait-clients 2 --clients 2)
for i in 0 1; do
    mp=$(free-port)
    echo "$mp" >"mp$i"
    zeek_bg "share$i" -i "pcapovertcp::127.0.0.1:$port?share=$i/2" policy/misc/stats Telemetry::metrics_port="$mp/tcp" \
        PcapOverTcp::reconnect_min=10min PcapOverTcp::reconnect_max=10min
done
total=0
for i in 0 1; do
    scrape_until "$(cat "mp$i")" "share$i/metrics" 60 zeek_pcapovertcp_outages_total=1
    records=$(value "share$i/metrics" zeek_pcapovertcp_records_total)
    other=$(value "share$i/metrics" zeek_pcapovertcp_other_share_total)
    scrape_until "$(cat "mp$i")" "share$i/metrics" 30 zeek_net_received_packets_total="$records"
    echo "share $i/2: records_total $records, other_share_total $other," \
        "records + other_share $([ $((records + other)) = "$packets" ] && echo "= $packets" || echo "$((records + other)) != $packets")," \
        "zeek_net_received_packets_total $(value "share$i/metrics" zeek_net_received_packets_total)"
    total=$((total + records))
done
echo "records_total of both: $total"
echo "--- share 0/2:"
show share0/metrics "$port"
stop share0
stop share1

echo "=== a listening source"
lp=$(free-port)
mp=$(free-port)
zeek_bg listen -i "pcapovertcp::tcp-listen://127.0.0.1:$lp" policy/misc/stats Telemetry::metrics_port="$mp/tcp"
timeout 60 "$SERVE" --connect "127.0.0.1:$lp" "$trace" >>serve.out 2>&1 || echo "pcapovertcp-serve --connect failed"
scrape_until "$mp" listen/metrics 60 zeek_pcapovertcp_records_total="$packets" \
    zeek_pcapovertcp_disconnects_total=1 zeek_net_received_packets_total="$packets"
show listen/metrics "$lp"
stop listen
echo "took $(elapsed_since "$t0") s" >timing
