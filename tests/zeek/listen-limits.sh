# Listening: the limits on who may send, and where Zeek may listen.
# Each Zeek ends within 2 s of SIGTERM: its zeek_done does (what Zeek does
# after that is its own; see sigterm_done_within).
# (a) PcapOverTcp::max_senders=2: with two senders connected a third is
#     refused with a warning naming it; once one has left, a fourth gets in.
#     zeek_done finds every connection closed (the source closes as Zeek
#     begins to stop, before zeek_done).
# (b) PcapOverTcp::allowed_senders={10.0.0.0/8}: a loopback sender is
#     refused with a warning, reported once for two attempts in a row.
# (c) A port already in use: one fatal error naming the endpoint, and exit
#     status 1, within 3 s of the end of script parsing.
# (d) IPv6: tcp-listen://[::1]:PORT receives a trace from netcat over ::1,
#     with the logs of `zeek -r`.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v nc && nc -h 2>&1 | grep -q -- '-s sourceaddr'
# @TEST-REQUIRES: python3 -c 'import socket; s = socket.socket(socket.AF_INET6); s.bind(("::1", 0))'
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids 2>/dev/null' EXIT
pids=
head -c 24 "$TRACES/dns53.pcap" >header.pcap

# listen DIR PORT [ARGS...]: a listening Zeek in DIR (its pid in $zeek),
# which prints the packets it received and the per-sender counters when it
# ends.
listen() {
    local dir=$1 port=$2
    shift 2
    mkdir "$dir"
    (cd "$dir" && zeek_bounded 40 -i "pcapovertcp::tcp-listen://$port" allow_network_time_forward=F "$@" \
        "$(done_stamp_script "$PWD/done-at")" \
        -e 'event zeek_done() {
            print fmt("packets received: %d", get_net_stats()$pkts_recvd);
            for (i in PcapOverTcp::stats()$senders) {
                local s = PcapOverTcp::stats()$senders[i];
                print fmt("sender %s: connects %d disconnects %d records %d", s$address, s$connects, s$disconnects, s$records);
            }
        }' >stdout 2>stderr) &
    zeek=$!
    pids="$pids $zeek"
    wait_for_line "$dir/stderr" "senders may connect now" 10 || echo "zeek is not listening"
}

# hold ADDRESS PORT: a sender from ADDRESS that sends a pcap header and
# stays connected (its pid in $held).
hold() {
    timeout 30 sh -c "(cat header.pcap; sleep 30) | nc -s $1 127.0.0.1 $2 >/dev/null 2>&1" &
    held=$!
    pids="$pids $held"
}

echo "-- (a) max_senders"
port=$(free-port)
listen a "127.0.0.1:$port" PcapOverTcp::max_senders=2
hold 127.0.0.1 "$port"
one=$held
wait_for_line a/stderr "sender 127.0.0.1:" 10 || echo "127.0.0.1 did not connect"
hold 127.0.0.2 "$port"
wait_for_line a/stderr "sender 127.0.0.2:" 10 || echo "127.0.0.2 did not connect"
hold 127.0.0.3 "$port"
wait_for_line a/stderr "sender 127.0.0.3:" 10 || echo "127.0.0.3 was not reported"
kill "$one"
wait_for_count a/stderr "sender 127.0.0.1:" 2 10 || echo "127.0.0.1 did not leave"
hold 127.0.0.4 "$port"
wait_for_line a/stderr "sender 127.0.0.4:" 10 || echo "127.0.0.4 was not reported"
sigterm_done_within $zeek 2 a/done-at
listen_senders_lines a/stderr "$port"
sort a/stdout

echo "-- (b) allowed_senders"
port=$(free-port)
listen b "127.0.0.1:$port" "PcapOverTcp::allowed_senders={10.0.0.0/8}"
# Zeek closes each connection at once, and netcat ends (its status depends
# on whether the reset came before it had written all).
for i in 1 2; do
    timeout 10 nc -N 127.0.0.1 "$port" <"$TRACES/dns53.pcap" >/dev/null 2>&1
    [ $? = 124 ] && echo "sender $i: still connected after 10 s"
done
sigterm_done_within $zeek 2 b/done-at
listen_senders_lines b/stderr "$port"
sort b/stdout

echo "-- (c) port in use"
port=$(free-port)
timeout 30 nc -l 127.0.0.1 "$port" >/dev/null 2>&1 &
pids="$pids $!"
wait-listen "$port" 10
# Counted from the end of script parsing: see parsed_stamp_script.
timeout --foreground -k 5 20 zeek -i "pcapovertcp::tcp-listen://127.0.0.1:$port" "$(parsed_stamp_script "$PWD/parsed-c")" >/dev/null 2>err
status=$?
took=$(since_parsed parsed-c)
echo "status $status: $(sed "s/$port/PORT/g" err)"
awk -v t="$took" 'BEGIN { print (t < 3) ? "ended within 3 s" : "took " t " s" }'

echo "-- (d) IPv6"
zeek_offline "$TRACES/http/cooper-grill-dvwa.pcapng" offline
total=$(capinfos -T -c -M -r "$TRACES/http/cooper-grill-dvwa.pcapng" | cut -f2)
port=$(free-port -6)
mkdir d
(cd d && zeek_bounded 40 -i "pcapovertcp::tcp-listen://[::1]:$port" allow_network_time_forward=F \
    -e "$(processed_marker "$total")" "$(done_stamp_script "$PWD/done-at")" >stdout 2>stderr) &
zeek=$!
pids="$pids $zeek"
wait_for_line d/stderr "senders may connect now" 10 || echo "zeek is not listening"
timeout 20 nc -N ::1 "$port" <"$TRACES/http/cooper-grill-dvwa.pcapng" >/dev/null 2>&1
echo "netcat status $?"
wait_for_line d/processed "$total packets processed" 20 || echo "not all $total packets processed"
sigterm_done_within $zeek 2 d/done-at
listen_senders_lines d/stderr "$port"
drop_sender_lines d
compare-logs offline d
