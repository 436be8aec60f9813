# The endpoint may be an IPv6 literal in brackets or a host name.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trace=$TRACES/dns53.pcap
zeek_offline "$trace" offline || exit 1

pf=$PWD/port6
"$SERVE" --listen "[::1]:0" --port-file "$pf" --clients 1 "$trace" >/dev/null 2>&1 &
for _ in $(seq 500); do [ -s "$pf" ] && break; sleep 0.02; done
(mkdir v6 && cd v6 && timeout 60 zeek -i "pcapovertcp::[::1]:$(cat "$pf")" allow_network_time_forward=F PcapOverTcp::reconnect=F >stdout 2>stderr)
echo "[::1]: $(compare-logs offline v6)"

port=$(serve_tool "$trace")
(mkdir name && cd name && timeout 60 zeek -i "pcapovertcp::localhost:$port" allow_network_time_forward=F PcapOverTcp::reconnect=F >stdout 2>stderr)
echo "localhost: $(compare-logs offline name)"
