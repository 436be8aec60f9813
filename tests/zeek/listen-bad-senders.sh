# Listening: misbehaving senders beside a good one are each reported with
# their address and closed, and cost the good one nothing. Each sender has
# its own loopback address, so PcapOverTcp::stats() counts each apart:
#   127.0.0.1 good: a whole trace (netcat);
#   127.0.0.2 sends an SSH banner instead of a pcap header;
#   127.0.0.3 connects and sends nothing (PcapOverTcp::header_timeout=1sec);
#   127.0.0.4 sends a header, 15 whole records and part of the 16th, and
#             leaves;
#   127.0.0.5 sends a one-packet pcap three times in a row, reconnecting.
# The good sender's packets all arrive and are analysed as by `zeek -r`:
# http.log and files.log (which only its trace produces) equal those of
# `zeek -r` on it alone. The other traces are shifted before its start, so
# whatever order the 200 ms merge window releases them in, they never move
# Zeek's network time past the good one's.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v nc && command -v editcap && command -v capinfos
# @TEST-REQUIRES: nc -h 2>&1 | grep -q -- '-s sourceaddr'
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids 2>/dev/null' EXIT
pids=

good=$TRACES/http/bro.org.pcap
base=$(capinfos -a -T -r -S "$good" | cut -f2)
shift_to "$TRACES/redis/pubsub.pcap" redis.pcap "$base" -1000 -F pcap
shift_to "$TRACES/dns53.pcap" dns.pcap "$base" -2000 -F pcap
# pubsub.pcap's 16th record ends at byte 1450.
head -c 1400 redis.pcap >cut.pcap
zeek_offline "$good" offline
total=$((751 + 15 + 3))

print_senders='event zeek_done() {
    for (i in PcapOverTcp::stats()$senders) {
        local s = PcapOverTcp::stats()$senders[i];
        print fmt("sender %s: connects %d disconnects %d bytes %d records %d dropped %d truncated %d corrupt %d",
            s$address, s$connects, s$disconnects, s$bytes, s$records, s$dropped, s$truncated, s$corrupt);
        if ( s$address == "127.0.0.1" )
            print fmt("sender %s: late %d", s$address, s$late);
    }
}'
port=$(free-port)
zeek_listening live 50 "tcp-listen://127.0.0.1:$port" allow_network_time_forward=F \
    PcapOverTcp::header_timeout=1sec PcapOverTcp::merge_window=200msec \
    -e "$print_senders $(processed_marker "$total")"

send() { # send SOURCE_ADDRESS FILE
    timeout 20 nc -N -s "$1" 127.0.0.1 "$port" <"$2" >/dev/null 2>&1
}
send 127.0.0.1 "$good" &
pids="$pids $!"
printf 'SSH-2.0-OpenSSH_9.6\r\n' >banner
send 127.0.0.2 banner &
pids="$pids $!"
timeout 20 sh -c "sleep 5 | nc -s 127.0.0.3 127.0.0.1 $port >/dev/null 2>&1" &
pids="$pids $!"
send 127.0.0.4 cut.pcap &
pids="$pids $!"
(for i in 1 2 3; do send 127.0.0.5 dns.pcap; done) &
pids="$pids $!"

wait_for_line live/stderr "sender 127.0.0.1:" 10 && wait_for_count live/stderr "left after 751 packets" 1 30 ||
    echo "the good sender did not leave"
wait_for_count live/stderr "sender 127.0.0.5:" 6 30 || echo "the reconnecting sender did not connect and leave three times"
# 127.0.0.2 and 127.0.0.3 are never admitted: one line each, no
# "connected".
for a in 127.0.0.2 127.0.0.3; do
    wait_for_count live/stderr "sender $a:" 1 30 || echo "no end reported for $a"
done
wait_for_count live/stderr "sender 127.0.0.4:" 2 30 || echo "no end reported for 127.0.0.4"

wait_for_line live/processed "$total packets processed" 30 || echo "not all $total packets processed"
sigterm_within $zeek 2

listen_senders_lines live/stderr "$port" | sort
sort live/stdout
# The other senders' connections take UIDs from the same sequence: UIDs
# (C + 14-18 characters, in columns of their own) are normalised.
mkdir offline-app live-app
for log in http.log files.log; do
    sed -E 's/\tC[0-9A-Za-z]{14,18}\t/\tUID\t/' offline/$log >offline-app/$log
    sed -E 's/\tC[0-9A-Za-z]{14,18}\t/\tUID\t/' live/$log >live-app/$log
done
compare-logs offline-app live-app
