# A pcapng stream whose capture host reports drops (tests/Scripts/
# make-pcapng-drops: epb_dropcount 5 + 2 + 10 on two interfaces; with ISBs,
# interface 0's isb_ifdrop + isb_osdrop = 21 outgrow its EPBs' 15 and
# interface 1's 1 does not reach its EPB's 2: 23). Zeek's own pcapng reader
# (zeek -r) differs by version: 8.2 adds each EPB's drop count to its
# dropped packets, read big-endian whatever the section's byte order
# (17 << 56 for this little-endian file), and ignores ISBs; 8.0 counts
# none. So only what it received is compared. Over PCAP-over-IP: 17 and 23
# in get_net_stats()$pkts_dropped, PcapOverTcp::stats()$upstream_dropped
# and the sender's, a capture_loss_upstream event and one
# PcapOverTcp::Capture_Loss_Upstream notice.
# @TEST-REQUIRES: command -v nc
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
make-capture pcap base.pcap
make-pcapng-drops base.pcap epb.pcapng little
make-pcapng-drops base.pcap isb.pcapng little isb

echo 'event zeek_done() { local n = get_net_stats(); print fmt("received %d", n$pkts_recvd); }' >offline.zeek
cat >stats.zeek <<'ZEEK'
global told = F;
event PcapOverTcp::capture_loss_upstream(source: string, sender: string, dropped: count, total: count)
	{
	if ( ! told )
		print "capture_loss_upstream", source, sender, dropped > 0;
	told = T;
	}
event zeek_done()
	{
	local n = get_net_stats();
	print fmt("get_net_stats: received %d dropped %d", n$pkts_recvd, n$pkts_dropped);
	local s = PcapOverTcp::stats();
	if ( |s$senders| > 0 )
		print fmt("stats: upstream_dropped %d, dropped by the reader %d; sender %s: upstream_dropped %d",
		          s$upstream_dropped, s$dropped, s$senders[0]$address, s$senders[0]$upstream_dropped);
	}
ZEEK

for f in epb isb; do
    echo "-- $f.pcapng"
    zeek_offline "$PWD/$f.pcapng" "offline-$f" -b ../offline.zeek
    echo "zeek -r: $(cat "offline-$f/stdout")"
    port=$(serve_nc "$f.pcapng")
    zeek_live "$port" "live-$f" ../stats.zeek || echo "zeek -i failed: $(tail -1 "live-$f/stderr")"
    echo "zeek -i pcapovertcp:"
    sed -e "s/:$port\\b/:PORT/g" "live-$f/stdout"
    zeek-cut note sub <"live-$f/notice.log" | sed -e "s/:$port\\b/:PORT/g"
done
