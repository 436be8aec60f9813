# Helpers for the btests; sourced by test scripts. Every wait is bounded.

# wait_source_open FILE: until FILE (a live Zeek's stderr) has Zeek's
# "listening on" line, which it writes once the packet source has opened
# (at once, before any stream); fails after 30 s. Timing a report from
# there leaves out Zeek's own start-up, which takes over 2 s on a loaded
# 2-core machine.
wait_source_open() {
    wait_for_line "$1" "listening on " 30
}

# without_zeek_open_lines: standard input without the lines Zeek itself
# writes when a live source opens (its "listening on" line and the empty
# line after it).
without_zeek_open_lines() {
    grep -v -e '^\(<[^>]*>, line [0-9]*: \)\{0,1\}listening on ' -e '^$'
}

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

# parsed_stamp_script FILE: writes FILE.zeek, a script (give its path to
# zeek as a script argument) that writes the time to FILE once Zeek has
# parsed its scripts, before it opens its packet source; prints that path.
# A bound on what Zeek does from Open() on is measured from there
# (wait_parsed, since_parsed): loading the scripts alone takes seconds on a
# busy machine, and longer with some Zeek versions than with others. (A
# script file, not -e: code given with -e becomes the location Zeek's
# later messages name.)
parsed_stamp_script() {
    cat >"$1.zeek" <<ZEEK
function pcapovertcp_test_stamp(): time
    {
    local t = current_time();
    local f = open("$1");
    print f, fmt("%.6f", t);
    close(f);
    return t;
    }

global pcapovertcp_test_t0 = pcapovertcp_test_stamp();
ZEEK
    echo "$1.zeek"
}

# wait_parsed FILE SECONDS: until parsed_stamp_script's FILE has its time;
# fails after SECONDS.
wait_parsed() {
    local i
    for i in $(seq $(($2 * 20))); do
        grep -q '^[0-9]' "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# since_parsed FILE: seconds (one decimal) from the time in
# parsed_stamp_script's FILE until now; "no-stamp" (which no bound accepts)
# without one.
since_parsed() {
    local t0
    t0=$(grep -m1 '^[0-9]' "$1" 2>/dev/null)
    if [ -n "$t0" ]; then elapsed_since "$t0"; else echo no-stamp; fi
}

# sort_zeek_scripts: copies stdin to stdout, each line a Zeek command line
# (`... zeek -i IFACE SCRIPT...`, maybe indented) with the words after the
# interface (the scripts) sorted: Zeek's systemd generators order them
# differently (9.0's loads the cluster backend first, 8.2's last).
sort_zeek_scripts() {
    python3 -c '
import sys
for line in sys.stdin:
    indent = line[: len(line) - len(line.lstrip())]
    w = line.split()
    i = w.index("-i") + 2 if "-i" in w else len(w)
    print(indent + " ".join(w[:i] + sorted(w[i:])))
'
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

# sigterm_done_within PID SECONDS DONE: as sigterm_within, but what must
# happen within SECONDS is Zeek's zeek_done (the packet source closed and
# the run loop ended), whose time the script of done_stamp_script DONE
# writes to DONE; what Zeek does after it (writing out its logs) is Zeek's,
# and took up to 4 s on a 2-core machine at load 20 (the status is still
# waited for).
sigterm_done_within() {
    local t0 status
    t0=$(date +%s.%N)
    kill -TERM "$1"
    wait "$1"
    status=$?
    echo "status $status"
    if awk -v t0="$t0" -v limit="$2" '{ t = $1 - t0; found = 1 } END { exit !(found && t < limit) }' "$3" 2>/dev/null; then
        echo "zeek_done within $2 s of SIGTERM"
    else
        echo "no zeek_done within $2 s of SIGTERM ($(awk -v t0="$t0" '{ printf "%.1f s", $1 - t0 }' "$3" 2>/dev/null))"
    fi
}

# done_stamp_script DONE: writes DONE.zeek, a script (give its path to zeek
# as a script argument) that writes the time of zeek_done to DONE; prints
# that path.
done_stamp_script() {
    cat >"$1.zeek" <<ZEEK
event zeek_done() &priority=10
    {
    local f = open("$1");
    print f, fmt("%.6f", current_time());
    close(f);
    }
ZEEK
    echo "$1.zeek"
}

# wait_for_count FILE TEXT N SECONDS: until FILE has at least N lines
# containing TEXT; fails after SECONDS.
wait_for_count() {
    local i
    for i in $(seq $(($4 * 20))); do
        [ "$(grep -cF -- "$2" "$1" 2>/dev/null)" -ge "$3" ] && return 0
        sleep 0.05
    done
    return 1
}

# shift_to FILE OUT BASE SECONDS [EDITCAP_ARGS...]: writes FILE to OUT
# (editcap -t) shifted by whole seconds so that its first packet lies SECONDS
# (a whole number) after the whole second of BASE (a `capinfos -a -T -r -S`
# start time); the fractions of a second stay as they were. EDITCAP_ARGS,
# e.g. -F nsecpcap, keep a format editcap would otherwise change.
shift_to() {
    local file=$1 out=$2 base=$3 secs=$4 start
    shift 4
    start=$(capinfos -a -T -r -S "$file" | cut -f2)
    editcap "$@" -t "$((${base%.*} + secs - ${start%.*}))" "$file" "$out"
}

# listen_senders_lines FILE PORT: the per-sender lines (connected, left,
# refused, closed, cut short) of FILE (a listening Zeek's stderr), with
# their level ("warning: " or none for info), the listen port as PORT and
# each sender's port (from 127.x.x.x or [::1]) as NNNN.
listen_senders_lines() {
    grep -E '(: |^)(refused )?sender (127\.|\[::1\])' "$1" |
        sed -e 's/^[0-9.]* //' -e 's/^\([a-z ]*\) in [^,]*, line [0-9]*: /\1: /' \
            -e 's/^[^,]*, line [0-9]*: //' -e "s/:$2\\b/:PORT/g" \
            -e 's/\(127\.[0-9.]*\|\[::1\]\):[0-9][0-9]*/\1:NNNN/g'
}

# processed_marker N: prints a Zeek script (for -e) that writes "N packets
# processed" to the file ./processed (in Zeek's directory) once Zeek has
# dispatched N packets (raw_packet events). "left after" lines come from the
# reader, before Zeek has analysed the packets, and SIGTERM discards those
# not yet processed: a test that stops a live Zeek waits for this file first.
processed_marker() {
    cat <<ZEEK
global processed_packets = 0;
event raw_packet(p: raw_pkt_hdr)
    {
    if ( ++processed_packets == $1 )
        {
        local f = open("processed");
        print f, fmt("%d packets processed", processed_packets);
        close(f);
        }
    }
ZEEK
}

# drop_sender_lines DIR: removes a listening source's per-sender lines
# (connected, left after) from DIR/reporter.log; they are the live run's own
# and have no counterpart in `zeek -r`'s.
drop_sender_lines() {
    grep -v -E ': sender (127\.[0-9.]*|\[::1\]):[0-9]+ (connected|left after)' "$1/reporter.log" >"$1/reporter.tmp"
    mv "$1/reporter.tmp" "$1/reporter.log"
}

# share_stats_script: a Zeek script (for -e) that prints at zeek_done the
# counters of a worker of a shared stream (?share=I/N), as share-compare
# reads them.
share_stats_script() {
    cat <<'ZEEK'
event zeek_done()
    {
    local s = PcapOverTcp::stats();
    print fmt("share-stats records %d other_share %d dropped %d truncated %d",
        s$records, s$other_share, s$dropped, s$truncated);
    }
ZEEK
}

# share_pids: the background processes of share_trace still running (for a
# test's EXIT trap: kill $share_pids).
share_pids=

# share_trace TRACE "N..." [ZEEK_ARGS...]: for each N, serves TRACE once
# to N workers (pcapovertcp-serve --clients N --wait-clients N), each a
# `zeek -i pcapovertcp::127.0.0.1:PORT?share=I/N` (with ZEEK_ARGS, reconnect
# off) in its own directory share-NAME-N/I, all N in parallel, and checks
# them with share-compare against `zeek -r` (offline-NAME). Prints one line
# per N ("NAME N=2: ok", with share-compare's note in parentheses if it has
# one), with the details after a failing one; a trace that
# `zeek -r` rejects is skipped with one line. Returns non-zero on any failure.
share_trace() {
    local trace=$1 ns=$2 name n i pf port spid wpids p dir packets status=0 failed note
    shift 2
    name=$(echo "${trace#"$TRACES"/}" | tr / _)
    if ! zeek_offline "$trace" "offline-$name"; then
        echo "$name: rejected by zeek -r: $(grep -m1 -i error "offline-$name/stderr")"
        return 0
    fi
    packets=$(capinfos -c -M -T -r "$trace" | cut -f2)
    for n in $ns; do
        dir=share-$name-$n
        mkdir -p "$dir"
        failed=
        pf=$(mktemp -u "$PWD/port.XXXXXX")
        timeout 100 "$SERVE" --listen 127.0.0.1:0 --port-file "$pf" --clients "$n" --wait-clients "$n" \
            "$trace" >/dev/null 2>"$dir/serve.stderr" &
        spid=$!
        share_pids="$share_pids $spid"
        if ! port=$(read_port_file "$pf"); then
            echo "$name N=$n: FAILED: the server did not start"
            kill "$spid" 2>/dev/null
            status=1
            continue
        fi
        wpids=
        for i in $(seq 0 $((n - 1))); do
            mkdir -p "$dir/$i"
            (cd "$dir/$i" && exec timeout 60 zeek -i "pcapovertcp::127.0.0.1:$port?share=$i/$n" \
                allow_network_time_forward=F PcapOverTcp::reconnect=F "$@" \
                -e "$(share_stats_script)" >stdout 2>stderr) &
            wpids="$wpids $!"
            share_pids="$share_pids $!"
        done
        i=0
        for p in $wpids; do
            wait "$p" || failed="$failed worker $i exited with status $?: $(tail -1 "$dir/$i/stderr");"
            i=$((i + 1))
        done
        wait "$spid" || failed="$failed the server exited with status $?;"
        share_pids=
        if [ -z "$failed" ] &&
            share-compare "$packets" "offline-$name" $(seq -f "$dir/%g" 0 $((n - 1))) >"$dir/compare"; then
            note=$(cat "$dir/compare")
            echo "$name N=$n: ok${note:+ ($note)}"
        else
            echo "$name N=$n: FAILED:$failed"
            cat "$dir/compare" 2>/dev/null
            status=1
        fi
    done
    return $status
}

# share_all_traces "N..." [ZEEK_ARGS...]: share_trace for every shared trace.
share_all_traces() {
    local status=0 trace ns=$1
    shift
    for trace in $(find "$TRACES" -type f \( -name '*.pcap' -o -name '*.pcapng' -o -name '*.cap' \) | sort); do
        share_trace "$trace" "$ns" "$@" || status=1
    done
    return $status
}

# share_workers_with_conns NAME N: how many of the N workers of share_trace
# for trace NAME logged at least one connection.
share_workers_with_conns() {
    local i count=0
    for i in $(seq 0 $(($2 - 1))); do
        grep -qv '^#' "share-$1-$2/$i/conn.log" 2>/dev/null && count=$((count + 1))
    done
    echo "$count"
}

# free_port_block N: prints the first of N consecutive TCP ports that are all
# free on 127.0.0.1 (ZeekControl numbers its nodes' ports up from one
# ZeekPort). Picked below the kernel's ephemeral range, where `free-port`
# and the servers' port 0 land.
free_port_block() {
    python3 - "$1" <<'PY'
import random
import socket
import sys

n = int(sys.argv[1])
for _ in range(500):
    base = random.randint(20000, 32000 - n)
    socks = []
    try:
        for p in range(base, base + n):
            socks.append(socket.socket())
            socks[-1].bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    sys.exit(0)
sys.exit(f"free_port_block: no {n} consecutive free ports")
PY
}

# zeekctl_setup DIR ZEEKPORT: a private ZeekControl set-up in DIR for
# `zeekctl-private DIR ...`: DIR/etc/zeekctl.cfg (spool, logs and site
# policy in DIR; cluster ports from ZEEKPORT up, 8 of them for a manager,
# a proxy and up to 3 workers; no telemetry port, no WebSocket, no mail),
# this build's plugin untarred into DIR/lib/zeek/plugins (where ZeekControl
# looks for the zeekctl plugins of Zeek plugins; the nodes get it as
# ZEEK_PLUGIN_PATH) and a copy of ZeekControl's scripts: ZeekControl points
# a symlink in its scripts directory at the zeekctl-config.sh of the
# configuration it last loaded, which its helpers read; the copy keeps the
# installation's (and any other test's) out of it. The nodes load
# DIR/site/test.zeek (empty here) instead of local.zeek. The test writes
# DIR/etc/node.cfg and may append options to DIR/etc/zeekctl.cfg.
zeekctl_setup() {
    local dir=$1 prefix
    prefix=$(zeek-config --prefix)
    mkdir -p "$dir/etc" "$dir/spool" "$dir/logs" "$dir/site" "$dir/lib/zeek/plugins"
    dir=$(cd "$dir" && pwd)
    tar xzf "$PCAPOVERTCP_BUILD/Zeek_PcapOverTcp.tgz" -C "$dir/lib/zeek/plugins"
    cp -R "$prefix/share/zeekctl/scripts" "$dir/zeekctl-scripts"
    rm -f "$dir/zeekctl-scripts/zeekctl-config.sh"
    cp "$prefix/etc/networks.cfg" "$dir/etc/"
    : >"$dir/site/test.zeek"
    cat >"$dir/etc/zeekctl.cfg" <<CFG
LogDir = $dir/logs
SpoolDir = $dir/spool
BrokerDBDir = $dir/spool/brokerstore
FileExtractDir = $dir/spool/extract_files
CfgDir = $dir/etc
ScriptsDir = $dir/zeekctl-scripts
HelperDir = $dir/zeekctl-scripts/helpers
PostProcDir = $dir/zeekctl-scripts/postprocessors
MakeArchiveName = $dir/zeekctl-scripts/make-archive-name
SitePolicyPath = $dir/site
SitePolicyScripts = test.zeek
ZeekPort = $2
MetricsPort = 0
UseWebSocket = 0
SendMail =
MailTo =
TraceSummary =
LogRotationInterval = 0
StopTimeout = 30
env_vars = ZEEK_PLUGIN_PATH=$dir/lib/zeek/plugins
CFG
}

# zeek_bounded SECONDS ARGS...: execs zeek ARGS (replacing the calling
# subshell, so that $! is the pid to signal) under
# `timeout --foreground -k 5 SECONDS`. --foreground matters: a plain
# `timeout` forwards a SIGTERM it receives to zeek twice (to the child and
# to its process group), and a second SIGTERM that reaches Zeek 8.2 while it
# waits for its log writers to finish makes it kill them and spin for ever
# ("received signal while waiting for thread packet_filter/Log::WRITER_ASCII,
# aborting all ..."; seen with the stock pcap source on lo too). -k 5: a
# zeek that has not ended 5 s after the SIGTERM (or the time limit) is
# killed, which its status (137) then shows.
zeek_bounded() {
    local limit=$1
    shift
    exec timeout --foreground -k 5 "$limit" zeek "$@"
}

# zeek_endpoint ENDPOINT DIR [ARGS...]: zeek -i pcapovertcp::ENDPOINT in DIR
# (allow_network_time_forward=F, PcapOverTcp::reconnect=F unless ARGS set
# it again), until the stream ends, 60 s at most; returns zeek's status.
zeek_endpoint() {
    local endpoint=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    (cd "$dir" && timeout --foreground -k 5 60 zeek -i "pcapovertcp::$endpoint" allow_network_time_forward=F \
        PcapOverTcp::reconnect=F "$@" >stdout 2>stderr)
}

# port_lines FILE PORT: FILE's lines without a leading network timestamp,
# with the port PORT as PORT and other ports of 127.x.x.x or [::1] as NNNN.
port_lines() {
    sed -e 's/^[0-9][0-9.]* //' -e "s/:$2\\b/:PORT/g" \
        -e 's/\(127\.[0-9.]*\|\[::1\]\):[0-9][0-9]*/\1:NNNN/g' "$1"
}

# tls_server_after_handshake PORT FILE ARGS...: serves FILE to one TLS
# client with `openssl s_server -accept 127.0.0.1:PORT -naccept 1 -brief
# ARGS` (ARGS: -cert, -key, ...), writing FILE to its standard input only
# once its handshake is done. s_server -quiet with a file as standard input
# can deadlock: when one select() finds both its standard input and the
# client's handshake readable, it writes the first 16 kB (which completes the
# handshake) and then blocks in SSL_read() for data the client never sends.
# Runs in the background (40 s at most); its pid is in ./s_server.pid, its
# output in ./s_server.out.
tls_server_after_handshake() {
    local port=$1 file=$2
    shift 2
    rm -f s_server.fifo s_server.out
    mkfifo s_server.fifo
    timeout 40 sh -c 'cat s_server.fifo | exec openssl s_server -accept "127.0.0.1:$0" -naccept 1 -brief "$@"' \
        "$port" "$@" >s_server.out 2>&1 &
    echo $! >s_server.pid
    (
        # Bounded even if nobody connects: writing the fifo blocks until
        # cat opens it, which it does at once.
        wait_for_line s_server.out "Ciphersuite:" 30 || true
        timeout 30 cat "$file" >s_server.fifo
    ) >/dev/null 2>&1 &
    echo $! >s_server-feed.pid
    wait-listen "$port" 10
}

# feed_fifos FIFO FILE [FIFO FILE ...]: writes each FILE into its FIFO in the
# background, all at once (the senders reading the fifos are waiting for
# them); the writers' pids are added to $pids for the test's EXIT trap.
# Each writer opens its fifo before timeout runs: killed at exit if stuck.
feed_fifos() {
    while [ $# -ge 2 ]; do
        timeout 30 cat "$2" >"$1" &
        pids="$pids $!"
        shift 2
    done
}

# header_len FILE: the bytes of a pcap or pcapng FILE before its first
# packet record (its whole stream header, as a listener admits it).
header_len() {
    python3 - "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
if data[:4] != b"\x0a\x0d\x0d\x0a":
    print(24)
    sys.exit()
order = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
pos = 0
while pos + 8 <= len(data):
    kind, length = struct.unpack(order + "II", data[pos:pos + 8])
    if kind in (2, 3, 6):
        break
    pos += length
print(pos)
PY
}

# feed_headers_then GO FIFO FILE [FIFO FILE ...]: writes each FILE's
# header (header_len) into its FIFO at once, and the rest of it once the
# file GO exists (30 s at most): a listener admits a sender at its header,
# so a test can wait for every sender to be admitted before any packet
# flows. The writers' pids are added to $pids.
feed_headers_then() {
    local go=$1
    shift
    while [ $# -ge 2 ]; do
        local n
        n=$(header_len "$2")
        timeout 30 sh -c 'head -c "$2" "$1"; while [ ! -e "$3" ]; do sleep 0.05; done; tail -c +"$(($2 + 1))" "$1"' \
            sh "$2" "$n" "$go" >"$1" &
        pids="$pids $!"
        shift 2
    done
}

# kill_pids_at_exit: at exit, kills every process in $pids (a list the test
# adds to, empty here) and waits for them all.
kill_pids_at_exit() {
    pids=""
    trap 'for pid in $pids; do kill "$pid" 2>/dev/null; done; wait' EXIT
}

# generate_share_units GENERATOR: zeek.conf as in docs/clusters.md (four
# workers, each its share of one stream; manager, logger and proxy), and
# GENERATOR's units from it in ./units. Says whether it ran, and what it
# wrote on stderr but 8.2's warning that it ignores `manager`.
generate_share_units() {
    cat >zeek.conf <<'CFG'
interface = pcapovertcp::127.0.0.1:57012?share=${worker_index0}/4
workers = 4
manager = 1
loggers = 1
proxies = 1
CFG
    mkdir units
    "$1" --config "$PWD/zeek.conf" units 2>gen.err && echo "zeek-systemd-generator: ok"
    grep -vxF "ignoring unknown key 'manager' from line 'manager = 1'" gen.err
}

# merge_inputs: the merge tests' three captures, from the traces, none
# sharing a timestamp. a.pcap: 751 packets over 17.5 s. b.pcapng: two
# pcapng interfaces (DNS) from 1.7 s after a's start, plus raw IPv4 (syslog
# over TCP) 5 s after. c.pcap: 9 packets (nanosecond pcap) 7 s after.
# Prints each one's span and packets.
merge_inputs() {
    local base
    cp "$TRACES/http/bro.org.pcap" a.pcap
    base=$(capinfos -a -T -r -S a.pcap | cut -f2)
    shift_to "$TRACES/pcapng-multi-interface.pcapng" b1.pcapng "$base" 2
    shift_to "$TRACES/tcp-syslog.pcap" b2.pcap "$base" 5
    mergecap -F pcapng -w b.pcapng b1.pcapng b2.pcap
    shift_to "$TRACES/http/get-to-ssh-server.pcap" c.pcap "$base" 7 -F nsecpcap
    capinfos -T -t -E -c -M a.pcap b.pcapng c.pcap | awk -F'\t' 'NR > 1 { print $1 ": " $2 ", " $3 ", " $4 " packets" }'
}

# senders_script: a Zeek script that prints, at the end, each sender's
# address and counters (all counted by IP address).
senders_script() {
    cat <<'ZEEK'
event zeek_done() {
    for (i in PcapOverTcp::stats()$senders) {
        local s = PcapOverTcp::stats()$senders[i];
        print fmt("sender %s: connects %d disconnects %d records %d dropped %d truncated %d corrupt %d late %d",
            s$address, s$connects, s$disconnects, s$records, s$dropped, s$truncated, s$corrupt, s$late);
    }
}
ZEEK
}

# wait_bounded PID SECONDS: waits for PID (a child of this shell), killing it
# after SECONDS; returns its status.
wait_bounded() {
    local i
    for i in $(seq $(($2 * 10))); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill "$1" 2>/dev/null
    wait "$1"
}

# field LINE KEY: the value of KEY=VALUE in LINE.
field() {
    echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# cluster_head: the [manager] and [proxy-1] sections of a node.cfg, both on
# localhost, to which the zeekctl tests add their workers.
cluster_head() {
    printf '[manager]\ntype=manager\nhost=localhost\n\n[proxy-1]\ntype=proxy\nhost=localhost\n\n'
}

# wait_gone PID SECONDS: until PID has ended, SECONDS at most (checked
# every 50 ms); fails if it is still running.
wait_gone() {
    local i
    for i in $(seq $(($2 * 20))); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.05
    done
    ! kill -0 "$1" 2>/dev/null
}

# zeekctl_step COMMAND SECONDS: `zeekctl-private cluster COMMAND`, bounded,
# its output in COMMAND.out; says "COMMAND ok", or "COMMAND FAILED" and
# the output.
zeekctl_step() {
    if timeout "$2" zeekctl-private cluster "$1" >"$1.out" 2>&1; then
        echo "$1 ok"
    else
        echo "$1 FAILED"
        cat "$1.out"
    fi
}

# zeek_listening DIR SECONDS ENDPOINT [ARGS...]: zeek -i
# pcapovertcp::ENDPOINT in DIR (made here), SECONDS at most, in the
# background: its pid in $zeek, added to $pids. Returns once Zeek says
# senders may connect (or, after 10 s, says it is not listening). ARGS are
# expanded before Zeek changes to DIR: paths in them are from here.
zeek_listening() {
    local dir=$1 limit=$2 endpoint=$3
    shift 3
    mkdir "$dir"
    (cd "$dir" && zeek_bounded "$limit" -i "pcapovertcp::$endpoint" "$@" >stdout 2>stderr) &
    zeek=$!
    pids="$pids $zeek"
    wait_for_line "$dir/stderr" "senders may connect now" 10 || echo "zeek is not listening"
}
