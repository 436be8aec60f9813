# A `socat TCP-LISTEN:PORT,reuseaddr,fork SYSTEM:...` server, stopped and
# restarted under a running Zeek: with PcapOverTcp::reconnect (the default)
# Zeek keeps running, reconnects, reports the outage once when it starts and
# once when it ends, and analyses both streams.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v socat
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
. "$SCRIPTS/socat.sh"
port=$(free-port)
a=$TRACES/http-vlan-0.pcap
b=$TRACES/dns53.pcap
want=$(( $(count_packets "$a") + $(count_packets "$b") ))

until_records_script "$want" 'connects=%d records=%d truncated=%d' 's$connects, s$records, s$truncated' >watch.zeek

start_socat "$a"
start_zeek_watch
# Wait until socat has forked for Zeek's connection, then stop the server.
wait_socat_forked
stop_socat
sleep 0.5
start_socat "$b"
wait "$zeek"
echo "zeek exit status: $?"
cat live/stdout
zeek-cut message <live/reporter.log | sed -e "s/:$port/:PORT/g" -e 's/after [0-9.]* s/after N s/' | grep -v "listening on"
echo "conn.log services: $(zeek-cut service <live/conn.log | sort -u | tr '\n' ' ')"
stop_socat
