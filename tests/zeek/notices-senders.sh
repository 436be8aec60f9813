# Listening, with PcapOverTcp::allowed_senders={127.0.0.2/32} and
# PcapOverTcp::max_senders=1: three connections from 127.0.0.1 give one
# sender_refused event (kind acl) and one PcapOverTcp::Sender_Refused
# notice; a second sender from 127.0.0.2 while the first is connected, one
# of kind limit; senders that come and go give sender_connected and
# sender_left with their packets.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v nc && nc -h 2>&1 | grep -q -- '-s sourceaddr'
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids 2>/dev/null' EXIT
pids=
head -c 24 "$TRACES/dns53.pcap" >header.pcap
port=$(free-port)

cat >events.zeek <<'ZEEK'
event PcapOverTcp::sender_refused(source: string, sender: string, kind: string, reason: string)
	{ print "sender_refused", source, sender, kind, reason; }
event PcapOverTcp::sender_connected(source: string, sender: string)
	{ print "sender_connected", source, sender; }
event PcapOverTcp::sender_left(source: string, sender: string, packets: count)
	{ print "sender_left", source, sender, packets; }
ZEEK

zeek_listening z 40 "tcp-listen://127.0.0.1:$port" ../events.zeek \
    "PcapOverTcp::allowed_senders={127.0.0.2/32}" PcapOverTcp::max_senders=1

for i in 1 2 3; do
    timeout 10 nc -N -s 127.0.0.1 127.0.0.1 "$port" <"$TRACES/dns53.pcap" >/dev/null 2>&1
done
wait_for_line z/stderr "refused sender 127.0.0.1" 10 || echo "127.0.0.1 was not refused"
# One sender that stays, one refused for the limit, then it leaves.
timeout 30 sh -c "(cat header.pcap; sleep 30) | nc -s 127.0.0.2 127.0.0.1 $port >/dev/null 2>&1" &
held=$!
pids="$pids $held"
wait_for_line z/stderr "sender 127.0.0.2:" 10 || echo "127.0.0.2 did not connect"
timeout 10 nc -N -s 127.0.0.2 127.0.0.1 "$port" <header.pcap >/dev/null 2>&1
wait_for_line z/stderr "refused sender 127.0.0.2" 10 || echo "127.0.0.2 was not refused"
kill "$held"
wait_for_line z/stderr "left after 0 packets" 10 || echo "127.0.0.2 did not leave"
# A whole trace from 127.0.0.2.
timeout 10 nc -N -s 127.0.0.2 127.0.0.1 "$port" <"$TRACES/dns53.pcap" >/dev/null 2>&1
wait_for_count z/stderr "left after" 2 10 || echo "the trace's sender did not leave"
sleep 0.5
sigterm_within $zeek 5
sed -e "s/:$port\\b/:PORT/g" z/stdout
echo "notice.log:"
zeek-cut note sub src msg <z/notice.log | sed -e "s/:$port\\b/:PORT/g"
