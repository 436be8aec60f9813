# A capture filter applies to each packet as compiled for that packet's own
# link type: a pcapng stream whose interfaces have different link types
# (made with mergecap from Ethernet, raw IP, raw IPv4 and Linux SLL2 traces)
# read with -f gives the logs of `zeek -r` on the packets tshark's
# independent filter keeps.
# @TEST-REQUIRES: test -d "$TRACES" && command -v mergecap && command -v tshark
# @TEST-REQUIRES: zeek-reads-mixed-pcapng
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
# (No 802.1Q trace: BPF's "tcp" does not look inside VLAN tags, tshark's
# display filter does.)
mergecap -F pcapng -w mixed.pcapng "$TRACES/http/get-to-ssh-server.pcap" "$TRACES/rotation.pcap" \
    "$TRACES/tcp-syslog.pcap" "$TRACES/linux_dlt_sll2.pcap" "$TRACES/dns53.pcap"
echo "link types: $(tshark -r mixed.pcapng -T fields -e frame.encap_type 2>/dev/null | sort -un | tr '\n' ' ')"
tshark -r mixed.pcapng -Y "tcp" -F pcapng -w expected.pcapng 2>/dev/null
echo "tshark keeps $(capinfos -c -M expected.pcapng | awk '/Number of packets/ { print $NF }') of $(capinfos -c -M mixed.pcapng | awk '/Number of packets/ { print $NF }') packets"
zeek_offline "$PWD/expected.pcapng" offline
port=$(serve_tool mixed.pcapng)
zeek_live "$port" live -f "tcp"
echo "live filter: $(zeek-cut filter <live/packet_filter.log)"
rm offline/packet_filter.log live/packet_filter.log
compare-logs offline live
echo "live conn.log: $(zeek-cut proto <live/conn.log | sort | uniq -c | xargs)"
