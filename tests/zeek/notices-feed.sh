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
port=$(free-port)
a=$TRACES/http-vlan-0.pcap
b=$TRACES/dns53.pcap
count() { zeek -r "$1" -b -e 'event zeek_done() { print get_net_stats()$pkts_recvd; }'; }
na=$(count "$a")
want=$(( na + $(count "$b") ))

# Each connection gets its file, then the server keeps it open and idle.
start_socat() {
    socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" SYSTEM:"cat $1; sleep 60" >/dev/null 2>&1 &
    socat_pid=$!
    wait-listen "$port" 10
}

cat >watch.zeek <<ZEEK
event PcapOverTcp::feed_lost(endpoint: string, reason: string)
	{ print "feed_lost", endpoint, reason; }
event PcapOverTcp::feed_restored(endpoint: string, outage: interval)
	{ print "feed_restored", endpoint, outage >= 1 sec ? "outage >= 1 s" : fmt("outage only %s", outage); }
event PcapOverTcp::sender_connected(source: string, sender: string)
	{ print "sender_connected", source, sender; }
event PcapOverTcp::sender_left(source: string, sender: string, packets: count)
	{ print "sender_left", source, sender, packets == $na ? "all of the first trace's packets" : fmt("%d packets", packets); }

# Ends Zeek once the packets of both streams have arrived.
event check()
	{
	local s = PcapOverTcp::stats();
	if ( s\$connects >= 2 && s\$records >= $want )
		{
		print fmt("connects=%d records=%d outages=%d", s\$connects, s\$records, s\$outages);
		terminate();
		return;
		}
	schedule 50 msec { check() };
	}
event zeek_init() { schedule 50 msec { check() }; }
ZEEK

start_socat "$a"
(mkdir live && cd live && ZEEK_PLUGIN_ACTIVATE=Zeek::PcapOverTcp timeout 60 zeek -b -i "pcapovertcp::127.0.0.1:$port" ../watch.zeek \
    PcapOverTcp::reconnect_min=50msec PcapOverTcp::reconnect_max=500msec >stdout 2>stderr) &
zeek=$!
# Wait until socat has forked for Zeek's connection, then stop the server
# for 1.5 s: Zeek's attempts meanwhile (after 50, 100, 200, 400 ms ...) fail.
for _ in $(seq 500); do pgrep -P "$socat_pid" >/dev/null && break; sleep 0.02; done
sleep 0.5
pkill -P "$socat_pid"; kill "$socat_pid"; wait "$socat_pid" 2>/dev/null
sleep 1.5
start_socat "$b"
wait "$zeek"
echo "zeek exit status: $?"
sed -e "s/:$port/:PORT/g" live/stdout
echo "notice.log:"
zeek-cut note sub msg <live/notice.log | sed -e "s/:$port/:PORT/g" -e 's/after [0-9.]* s/after N s/'
pkill -P "$socat_pid"; kill "$socat_pid" 2>/dev/null
