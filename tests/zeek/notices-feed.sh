# A server killed and restarted under a running Zeek (reconnecting every
# 50-500 ms meanwhile, so several attempts fail): the events fire with the
# endpoint, the reason and the outage, and notice.log has exactly one
# PcapOverTcp::Feed_Lost and one Feed_Restored naming the endpoint. Under
# `zeek -b` (the plugin activated): the plugin loads the notice framework.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v socat
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
. "$SCRIPTS/socat.sh"
port=$(free-port)
a=$TRACES/http-vlan-0.pcap
b=$TRACES/dns53.pcap
na=$(count_packets "$a")
want=$(( na + $(count_packets "$b") ))

cat >watch.zeek <<ZEEK
event PcapOverTcp::feed_lost(endpoint: string, reason: string)
	{ print "feed_lost", endpoint, reason; }
event PcapOverTcp::feed_restored(endpoint: string, outage: interval)
	{ print "feed_restored", endpoint, outage >= 1 sec ? "outage >= 1 s" : fmt("outage only %s", outage); }
event PcapOverTcp::sender_connected(source: string, sender: string)
	{ print "sender_connected", source, sender; }
event PcapOverTcp::sender_left(source: string, sender: string, packets: count)
	{ print "sender_left", source, sender, packets == $na ? "all of the first trace's packets" : fmt("%d packets", packets); }

ZEEK
until_records_script "$want" 'connects=%d records=%d outages=%d' 's$connects, s$records, s$outages' >>watch.zeek

start_socat "$a"
ZEEK_PLUGIN_ACTIVATE=Zeek::PcapOverTcp start_zeek_watch -b
# Wait until socat has forked for Zeek's connection, then stop the server
# for 1.5 s: Zeek's attempts meanwhile (after 50, 100, 200, 400 ms ...) fail.
wait_socat_forked
stop_socat
sleep 1.5
start_socat "$b"
wait "$zeek"
echo "zeek exit status: $?"
sed -e "s/:$port/:PORT/g" live/stdout
echo "notice.log:"
zeek-cut note sub msg <live/notice.log | sed -e "s/:$port/:PORT/g" -e 's/after [0-9.]* s/after N s/'
stop_socat
