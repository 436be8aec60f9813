# SIGTERM ends a running Zeek within 2 s whatever the reader is doing:
# waiting for room in a full buffer (the server floods, Zeek with its
# default scripts falls behind), or reconnecting to a server whose connect
# stalls (its listen queue is full; the connect timeout is 10 s).
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
echo "-- full buffer"
port=$(serve_tool "$TRACES/smb/smb2.pcap" --loop 0)
zeek -i "pcapovertcp::127.0.0.1:$port" PcapOverTcp::buffer_size=1048576 \
    -e 'event zeek_done() { local s = PcapOverTcp::stats(); print fmt("bytes read beyond the buffer: %s", s$bytes > 1048576); }' \
    >out 2>err &
pid=$!
# Counted from the source's opening, not from Zeek's start: Zeek installs
# its SIGTERM handler just after it opens the source, and its start-up took
# 10 s on this 2-core machine at a load of 22.
wait_source_open err || echo "the source did not open within 30 s"
sleep 4
kill -0 $pid && echo "running"
sigterm_within $pid 2
cat out

echo "-- stalled reconnect"
port=$(stream_server --clients 1 "$TRACES/dns53.pcap")
zeek -i "pcapovertcp::127.0.0.1:$port" PcapOverTcp::reconnect_min=100msec >out 2>err &
pid=$!
wait_for_line err "connection lost" 10 && echo "the server went away"
# The same port now accepts nobody: reconnects stall in connect().
stream-server --listen "127.0.0.1:$port" --port-file pf --stall /dev/null >/dev/null 2>&1 &
stall=$!
read_port_file pf >/dev/null
sleep 1.5
kill -0 $pid && echo "running, reconnecting"
sigterm_within $pid 2
kill $stall
