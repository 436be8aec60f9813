# As traces-netcat.sh, with pcapovertcp-serve as the server.
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
status=0
for trace in $(find "$TRACES" -type f \( -name '*.pcap' -o -name '*.pcapng' -o -name '*.cap' \) | sort); do
    compare_trace serve_tool "$trace" || status=1
done
exit $status
