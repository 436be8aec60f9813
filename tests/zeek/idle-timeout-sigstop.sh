# A server that is alive but silent (SIGSTOP: its kernel still answers TCP
# keepalive) is not an outage by default, however short the keepalive; with
# PcapOverTcp::idle_timeout it is, and the source reconnects after it.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
export ZEEK_PLUGIN_ACTIVATE=Zeek::PcapOverTcp
port=$(stream_server --after hold "$TRACES/dns53.pcap")
server=$(cat stream-server.pid)
fast="PcapOverTcp::keepalive_idle=1sec PcapOverTcp::keepalive_interval=1sec PcapOverTcp::keepalive_probes=1"
zeek -b -i "pcapovertcp::127.0.0.1:$port" $fast >/dev/null 2>err-default &
a=$!
zeek -b -i "pcapovertcp::127.0.0.1:$port" $fast PcapOverTcp::idle_timeout=2sec >/dev/null 2>err-idle &
b=$!
wait_for_line err-default "listening on" 10 && wait_for_line err-idle "listening on" 10 || echo "Zeek did not open the sources"
kill -STOP "$server"
sleep 5
echo "without idle_timeout: $(grep -c 'connection lost' err-default) outages"
echo "with idle_timeout=2sec:"
grep -h "connection lost" err-idle | sed -E -e "s/$port/PORT/g" -e "s/^[0-9.]+ //" | sort -u
kill -CONT "$server"
wait_for_line err-idle "connection restored" 10 && echo "restored after SIGCONT"
kill -TERM $a $b
wait $a $b
kill "$server"
