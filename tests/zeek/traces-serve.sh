# As traces-netcat.sh, with pcapovertcp-serve as the server.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
compare_all_traces serve_tool
