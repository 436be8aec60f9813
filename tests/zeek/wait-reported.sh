# With the default options (reconnect, no open_timeout) a refused endpoint
# is reported within 2 s of the source opening (at once, without waiting for
# a stream) while Zeek keeps running and waiting for its feed, and SIGTERM
# ends it at once, as any live Zeek (status 0). So does SIGTERM while a
# connect is stalled (a listener whose accept queue is full: SYNs go
# unanswered).
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
port=$(free-port)
zeek -i "pcapovertcp::127.0.0.1:$port" "$(parsed_stamp_script "$PWD/parsed-1")" >/dev/null 2>err &
pid=$!
wait_source_open err || echo "the source did not open within 30 s"
wait_for_line err "waiting for a stream" 2 && echo "warned within 2 s" || echo "no warning within 2 s"
sleep 1
kill -0 $pid && echo "still waiting"
sigterm_within $pid 2
# Its own lines: the wait, reported once.
grep "^warning" err | sed -e "s/$port/PORT/g"

echo "-- stalled connect"
port=$(stream_server --stall /dev/null)
zeek -i "pcapovertcp::127.0.0.1:$port" "$(parsed_stamp_script "$PWD/parsed-2")" >/dev/null 2>err &
pid=$!
# The notice comes 1 s into the connect, which starts as the source opens.
wait_source_open err || echo "the source did not open within 30 s"
wait_for_line err "gets no answer" 3 && echo "reported within 3 s" || echo "no report within 3 s"
kill -0 $pid && echo "still connecting"
sigterm_within $pid 2
# Its own lines: the wait, reported once.
grep "^warning" err | sed -e "s/$port/PORT/g"
kill "$(cat stream-server.pid)"
