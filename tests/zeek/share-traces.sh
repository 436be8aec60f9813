# One stream shared by a cluster of workers (?share=I/N, share_by the
# default ADDRESS_PAIR): for every shared trace, N=2 and N=3 workers read one
# pcapovertcp-serve stream (--wait-clients N, so each gets it from its first
# packet) in parallel, and together they match `zeek -r` of the trace: the
# same conn.log lines (without uids), each connection on one worker only,
# every packet kept by exactly one worker and counted as other_share by the
# others, and no weird that zeek -r does not have (see share-compare).
# One exception, shown on its line as a note: a connection zeek -r saw
# through several tunnels (Teredo's ICMPv6 echo, request through the Teredo
# server, reply through a relay) is not compared, since the hash does not
# enter tunnels and its two halves may go to two workers (with
# ADDRESS_PAIR they happen to share a worker for N=2 and 3, not for 8).
# All traces with both N: about 1.5 minutes (2 cores).
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: test -x "$SERVE"
# @TEST-REQUIRES: command -v capinfos && command -v timeout && command -v python3
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $share_pids 2>/dev/null' EXIT
share_all_traces "2 3"
