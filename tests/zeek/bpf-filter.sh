# A BPF capture filter (-f) applies to the stream: the logs equal those of
# `zeek -r -f` with the same filter, and the packets the filter rejected are
# counted as filtered in the source's statistics.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
cat >stats.zeek <<'ZEEK'
event zeek_done()
	{
	local s = get_net_stats();
	print fmt("received=%d link=%d filtered=%d dropped=%d", s$pkts_recvd, s$pkts_link,
	          s?$pkts_filtered ? s$pkts_filtered : 0, s$pkts_dropped);
	}
ZEEK
trace=$TRACES/tunnels/Teredo.pcap
zeek_offline "$trace" offline -f "udp port 53" || exit 1
port=$(serve_tool "$trace")
zeek_live "$port" live -f "udp port 53" "$PWD/stats.zeek" || exit 1
compare-logs offline live
echo "services: $(zeek-cut service <live/conn.log | sort -u | tr '\n' ' ')"
cat live/stdout
