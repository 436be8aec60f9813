# A `socat TCP-LISTEN:PORT,reuseaddr,fork SYSTEM:...` server, stopped and
# restarted under a running Zeek: with PcapOverTcp::reconnect (the default)
# Zeek keeps running, reconnects, reports the outage once when it starts and
# once when it ends, and analyses both streams.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v socat
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
port=$(free-port)
a=$TRACES/http-vlan-0.pcap
b=$TRACES/dns53.pcap
count() { zeek -r "$1" -b -e 'event zeek_done() { print get_net_stats()$pkts_recvd; }'; }
want=$(( $(count "$a") + $(count "$b") ))

# Each connection gets its file, then the server keeps it open and idle.
# socat runs in a process group of its own (setsid), which stop_socat ends
# at once: killing its children first let the still listening socat accept
# Zeek's reconnect (and fork a server of the old file for it) before it
# died, so Zeek read the first file twice or connected once more.
start_socat() {
    setsid socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" SYSTEM:"cat $1; sleep 60" >/dev/null 2>&1 &
    socat_pid=$!
    wait-listen "$port" 10
}
stop_socat() {
    kill -TERM -- "-$socat_pid" 2>/dev/null
    wait "$socat_pid" 2>/dev/null || true # its status is that of SIGTERM
}

cat >watch.zeek <<ZEEK
# Ends Zeek once the packets of both streams have arrived.
event check()
	{
	local s = PcapOverTcp::stats();
	if ( s\$connects >= 2 && s\$records >= $want )
		{
		print fmt("connects=%d records=%d truncated=%d", s\$connects, s\$records, s\$truncated);
		terminate();
		return;
		}
	schedule 50 msec { check() };
	}
event zeek_init() { schedule 50 msec { check() }; }
ZEEK

start_socat "$a"
(mkdir live && cd live && timeout 60 zeek -i "pcapovertcp::127.0.0.1:$port" ../watch.zeek \
    PcapOverTcp::reconnect_min=50msec PcapOverTcp::reconnect_max=500msec >stdout 2>stderr) &
zeek=$!
# Wait until socat has forked for Zeek's connection, then stop the server.
for _ in $(seq 500); do pgrep -P "$socat_pid" >/dev/null && break; sleep 0.02; done
sleep 0.5
stop_socat
sleep 0.5
start_socat "$b"
wait "$zeek"
echo "zeek exit status: $?"
cat live/stdout
zeek-cut message <live/reporter.log | sed -e "s/:$port/:PORT/g" -e 's/after [0-9.]* s/after N s/' | grep -v "listening on"
echo "conn.log services: $(zeek-cut service <live/conn.log | sort -u | tr '\n' ' ')"
stop_socat
