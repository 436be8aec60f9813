# Several endpoints (pcapovertcp::H:P1,H:P2,H:P3): Zeek connects to three
# servers (netcat with an Ethernet pcap, pcapovertcp-serve relaying a pcapng
# of three interfaces, two Ethernet and one raw IPv4, and netcat with a
# nanosecond pcap), merges the overlapping streams in timestamp order and,
# with PcapOverTcp::reconnect=F, ends when all three have ended. Its logs
# equal those of `zeek -r` on mergecap's timestamp-ordered merge of the
# three files.
#
# The merge waits only for endpoints that are connected: one whose dialer
# has not connected yet is not waited for, and a server that sent at once
# could have all its packets released before a slower dial completes (seen
# under load: the third endpoint's 9 records all "late"). So, as in
# listen-merge.sh, each server relays a fifo that is filled only once Zeek
# is connected to all three.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v nc && command -v mergecap && command -v editcap && command -v capinfos
# @TEST-REQUIRES: zeek-reads-mixed-pcapng
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids 2>/dev/null' EXIT
pids=

merge_inputs
mergecap -w merged.pcapng a.pcap b.pcapng c.pcap
zeek_offline "$PWD/merged.pcapng" offline

mkfifo fa fb fc
pa=$(free-port)
timeout 40 sh -c "cat fa | nc -N -l 127.0.0.1 $pa >/dev/null 2>&1" &
pids="$pids $!"
timeout 40 sh -c "cat fb | \"\$SERVE\" --listen 127.0.0.1:0 --port-file pb.port --clients 1 - >/dev/null 2>&1" &
pids="$pids $!"
pc=$(free-port)
timeout 40 sh -c "cat fc | nc -N -l 127.0.0.1 $pc >/dev/null 2>&1" &
pids="$pids $!"
pb=$(read_port_file pb.port) || echo "server b did not start"
wait-listen "$pa" 10
wait-listen "$pc" 10

mkdir live
(cd live && zeek_bounded 40 -i "pcapovertcp::127.0.0.1:$pa,127.0.0.1:$pb,127.0.0.1:$pc" \
    allow_network_time_forward=F PcapOverTcp::reconnect=F PcapOverTcp::merge_window=5sec \
    -e 'event zeek_done() {
        for (i in PcapOverTcp::stats()$senders) {
            local s = PcapOverTcp::stats()$senders[i];
            print fmt("records %d dropped %d truncated %d corrupt %d late %d",
                s$records, s$dropped, s$truncated, s$corrupt, s$late);
        }
    }' >stdout 2>stderr) &
zeek=$!
pids="$pids $zeek"
wait-established 10 "$pa" "$pb" "$pc" || echo "zeek did not connect to all three"
# A dialer opens its merge lane just after its connect() returns.
sleep 0.5
feed_fifos fa a.pcap fb b.pcapng fc c.pcap
wait $zeek
echo "zeek exit status: $?"
# Senders are the endpoints, in the order given: a, b, c.
cat live/stdout
# Waiting for the fifos may take Zeek's start-up past its one-second notice
# ("connected, but no pcap header has arrived after 1 s"): a live run's own.
grep -v "no pcap header has arrived after" live/reporter.log >live/reporter.tmp
mv live/reporter.tmp live/reporter.log
compare-logs offline live
