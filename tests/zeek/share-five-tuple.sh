# As share-traces.sh, with PcapOverTcp::share_by=PcapOverTcp::FIVE_TUPLE
# (addresses, ports and protocol; fragments follow their datagram through
# the sharer's fragment table), on a subset of the traces: IPv6 fragments
# (ipv6-fragmented-dns.pcap), QinQ, the tunnels (all of a tunnel's flows
# follow the outer 5-tuple) and http/bro.org.pcap, whose 13 connections
# between 10.0.2.15 and 192.150.187.43 one worker gets with ADDRESS_PAIR,
# and which FIVE_TUPLE must spread over at least two of the workers.
# Teredo's ICMPv6 echo, through two tunnels, is split over two workers with
# N=3: not compared, shown as a note (see share-compare).
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: test -x "$SERVE"
# @TEST-REQUIRES: command -v capinfos && command -v timeout && command -v python3
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $share_pids 2>/dev/null' EXIT
for trace in ipv6-fragmented-dns.pcap http-qinq-0.pcap http/bro.org.pcap tunnels/Teredo.pcap tunnels/vxlan-encapsulated-http.pcap; do
    share_trace "$TRACES/$trace" "2 3" PcapOverTcp::share_by=PcapOverTcp::FIVE_TUPLE
done
for n in 2 3; do
    w=$(share_workers_with_conns http_bro.org.pcap $n)
    if [ "$w" -ge 2 ]; then
        echo "http_bro.org.pcap N=$n: connections spread over at least 2 workers"
    else
        echo "http_bro.org.pcap N=$n: connections on $w worker(s) only"
    fi
done
