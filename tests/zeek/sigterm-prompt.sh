# SIGTERM ends a running Zeek within 2 s whatever the reader is doing:
# waiting for room in a full buffer (the server floods, Zeek with its
# default scripts falls behind), or reconnecting to a server whose connect
# stalls (its listen queue is full; the connect timeout is 10 s). The bound
# is on zeek_done (the source is closed and the run loop over): Zeek then
# writes out its logs, which is Zeek's own doing and took 2.1 s (the
# flood) and 4.3 s (the stalled reconnect) on a 2-core machine at load 20.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
echo "-- full buffer"
port=$(serve_tool "$TRACES/smb/smb2.pcap" --loop 0)
# SIGTERM once Zeek runs (its zeek_init is done) and the reader has filled
# the buffer at least once (it has read more than the buffer holds).
zeek -i "pcapovertcp::127.0.0.1:$port" PcapOverTcp::buffer_size=1048576 -e '
    event check_full() {
        if ( PcapOverTcp::stats()$bytes > 1048576 )
            Reporter::info("test: the reader has read beyond the buffer");
        else
            schedule 50msec { check_full() };
    }
    event zeek_init() { schedule 50msec { check_full() }; }
    event zeek_done() { local s = PcapOverTcp::stats(); print fmt("bytes read beyond the buffer: %s", s$bytes > 1048576); }' \
    "$(done_stamp_script "$PWD/done-at")" >out 2>err &
pid=$!
wait_for_line err "test: the reader has read beyond the buffer" 60 || echo "the buffer did not fill within 60 s"
kill -0 $pid && echo "running"
sigterm_done_within $pid 2 done-at
cat out

echo "-- stalled reconnect"
port=$(stream_server --clients 1 "$TRACES/dns53.pcap")
zeek -i "pcapovertcp::127.0.0.1:$port" PcapOverTcp::reconnect_min=100msec "$(done_stamp_script "$PWD/done-at-2")" >out 2>err &
pid=$!
wait_for_line err "connection lost" 10 && echo "the server went away"
# The same port now accepts nobody: reconnects stall in connect().
stream-server --listen "127.0.0.1:$port" --port-file pf --stall /dev/null >/dev/null 2>&1 &
stall=$!
read_port_file pf >/dev/null
sleep 1.5
kill -0 $pid && echo "running, reconnecting"
sigterm_done_within $pid 2 done-at-2
kill $stall
