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
mkdir default idle
(cd default && exec zeek -b -i "pcapovertcp::127.0.0.1:$port" $fast -e "$(processed_marker 1)" >/dev/null 2>../err-default) &
a=$!
(cd idle && exec zeek -b -i "pcapovertcp::127.0.0.1:$port" $fast PcapOverTcp::idle_timeout=2sec \
    -e "$(processed_marker 1)" >/dev/null 2>../err-idle) &
b=$!
# The streams have started (the sources open before them, at once).
wait_for_line default/processed "1 packets processed" 10 && wait_for_line idle/processed "1 packets processed" 10 ||
    echo "the streams did not start within 10 s"
kill -STOP "$server"
sleep 5
echo "without idle_timeout: $(grep -c 'connection lost' err-default) outages"
echo "with idle_timeout=2sec:"
# Without the script location Zeek gives the line (-e's).
grep -h "connection lost" err-idle | sed -E -e "s/$port/PORT/g" -e "s/^[0-9.]+ //" -e 's/^warning in [^:]*, line [0-9]+: /warning: /' |
    sort -u
kill -CONT "$server"
wait_for_line err-idle "connection restored" 10 && echo "restored after SIGCONT"
kill -TERM $a $b
wait $a $b
kill "$server"
