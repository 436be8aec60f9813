# With the default options (reconnect, no open_timeout) a refused endpoint
# is reported within 2 s while Zeek keeps waiting, and SIGTERM ends that
# wait at once. So does SIGTERM while a connect is stalled (a listener
# whose accept queue is full: SYNs go unanswered). The times are counted
# from the end of Zeek's script parsing (parsed_stamp_script): its start-up
# before that is not the source's doing.
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
port=$(free-port)
zeek -i "pcapovertcp::127.0.0.1:$port" "$(parsed_stamp_script "$PWD/parsed-1")" >/dev/null 2>err &
pid=$!
wait_parsed parsed-1 60 || echo "zeek did not parse its scripts within 60 s"
wait_for_line err "waiting for a stream" 2 && echo "warned within 2 s" || echo "no warning within 2 s"
sleep 1
kill -0 $pid && echo "still waiting"
sigterm_within $pid 2
sed -e "s/$port/PORT/g" err

echo "-- stalled connect"
port=$(stream_server --stall /dev/null)
zeek -i "pcapovertcp::127.0.0.1:$port" "$(parsed_stamp_script "$PWD/parsed-2")" >/dev/null 2>err &
pid=$!
wait_parsed parsed-2 60 || echo "zeek did not parse its scripts within 60 s"
# The notice comes 1 s into the connect.
wait_for_line err "gets no answer" 3 && echo "reported within 3 s" || echo "no report within 3 s"
kill -0 $pid && echo "still connecting"
sigterm_within $pid 2
sed -e "s/$port/PORT/g" err
kill "$(cat stream-server.pid)"
