# Every shared trace that `zeek -r` reads, served once by netcat
# (`nc -N -l ... < trace`) and read with `zeek -i pcapovertcp::...`, must
# produce the same logs as `zeek -r` (see Scripts/compare-logs for the few
# wall-clock fields a live run may differ in).
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v nc
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
compare_all_traces serve_nc
