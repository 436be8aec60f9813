# With the default options (reconnect, no open_timeout) a refused endpoint
# is reported within 2 s while Zeek keeps waiting, and SIGTERM ends that
# wait at once. So does SIGTERM while a connect is stalled (a listener
# whose accept queue is full: SYNs go unanswered).
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
port=$(free-port)
zeek -i "pcapovertcp::127.0.0.1:$port" >/dev/null 2>err &
pid=$!
wait_for_line err "waiting for a stream" 2 && echo "warned within 2 s" || echo "no warning within 2 s"
sleep 1
kill -0 $pid && echo "still waiting"
sigterm_within $pid 2
sed -e "s/$port/PORT/g" err

echo "-- stalled connect"
port=$(stream_server --stall /dev/null)
zeek -i "pcapovertcp::127.0.0.1:$port" >/dev/null 2>err &
pid=$!
# The notice comes 1 s into the connect; Zeek's own start-up (about 1 s
# on a loaded 2-core machine) comes before it.
wait_for_line err "gets no answer" 3 && echo "reported within 3 s" || echo "no report within 3 s"
kill -0 $pid && echo "still connecting"
sigterm_within $pid 2
sed -e "s/$port/PORT/g" err
kill "$(cat stream-server.pid)"
