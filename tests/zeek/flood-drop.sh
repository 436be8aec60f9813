# A flood into a slow Zeek with PcapOverTcp::drop_when_full=T: the reader
# keeps draining the socket and drops whole packets while the buffer is full;
# every packet sent is either received or counted as dropped in Zeek's
# packet statistics, and memory stays bounded: Zeek's peak RSS exceeds that
# of `zeek -b -r` on the same trace (Zeek's own state; 68 MiB here, so an
# absolute "buffer_size + 64 MiB" would measure Zeek, not the source) by at
# most buffer_size + 16 MiB.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
python3 "$PROJECT/bench/make-trace.py" flood.pcap 300000 >/dev/null
sent=$(zeek -b -r flood.pcap -e 'event zeek_done() { print get_net_stats()$pkts_recvd; }')
cat >slow.zeek <<'ZEEK'
# About a microsecond of script work per packet: slower than the sender.
event raw_packet(p: raw_pkt_hdr)
	{
	local i = 0;
	while ( i < 40 )
		++i;
	}
event zeek_done()
	{
	local s = get_net_stats();
	print fmt("%d %d %d", s$pkts_link, s$pkts_recvd, s$pkts_dropped);
	}
ZEEK
port=$(serve_tool flood.pcap)
python3 - "$port" "$sent" <<'PY'
import os, resource, subprocess, sys
port, sent = sys.argv[1], int(sys.argv[2])
buffer_mib = 16
env = dict(os.environ, ZEEK_PLUGIN_ACTIVATE="Zeek::PcapOverTcp")
subprocess.run(["zeek", "-b", "-r", "flood.pcap"], env=env, capture_output=True, check=True)
offline_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
out = subprocess.run(["zeek", "-b", "-i", f"pcapovertcp::127.0.0.1:{port}", "slow.zeek",
                      "PcapOverTcp::reconnect=F", "PcapOverTcp::drop_when_full=T",
                      f"PcapOverTcp::buffer_size={buffer_mib}*1024*1024"],
                     env=env, capture_output=True, text=True, timeout=300)
link, received, dropped = map(int, out.stdout.split())
# ru_maxrss of children is the largest child's; the live run must be it.
rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print("packets were dropped:", "yes" if dropped > 0 else f"no ({out.stdout})")
print("every packet parsed:", "yes" if link == sent else f"no (link={link}, sent={sent})")
print("dropped = sent - received:", "yes" if dropped == sent - received else
      f"no (sent={sent} received={received} dropped={dropped})")
extra = rss_mib - offline_mib
print("peak RSS within zeek -r's + buffer_size + 16 MiB:",
      "yes" if extra <= buffer_mib + 16 else f"no ({rss_mib:.0f} MiB vs {offline_mib:.0f} MiB)")
PY
