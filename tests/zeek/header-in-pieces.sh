# A server whose first TCP segment holds less than the pcap header (written
# as 10 bytes, then 14, then the rest) gives the logs of `zeek -r`: the
# source opens with the stream's real link type, never a placeholder.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
in_pieces() { stream_server --pieces 10,14 --clients 1 "$1"; }
status=0
for t in dns53.pcap http-vlan-0.pcap linux_dlt_sll2.pcap tcp-syslog.pcap http/get-to-ssh-server.pcap \
    smb/dssetup_DsRoleGetPrimaryDomainInformation_standalone_workstation.cap pcapng-multi-interface.pcapng; do
    compare_trace in_pieces "$TRACES/$t" || status=1
done
exit $status
