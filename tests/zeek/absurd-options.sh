# Absurd interval options (1e300 sec: far beyond any clock) neither abort
# Zeek nor stop the source: each interval counts as at most 365 days. Before,
# a huge open_timeout panicked inside the Rust bridge (Zeek aborted) and a
# huge merge_window killed the merge thread (a listening source delivered
# nothing). A connect source reads a whole trace and ends; a listening
# source with a quiet sender (header only) holds the good sender's packets
# for the window, at most until the quiet sender leaves, then delivers
# them all.
# @TEST-REQUIRES: command -v nc
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids 2>/dev/null' EXIT
pids=

# Every interval option at 1e300 sec. The listening run leaves open_timeout
# out, so that it shows the merge's own failure (before the fix, the
# open_timeout alone aborted Zeek as it opened, whatever the source).
huge=(PcapOverTcp::merge_window=1e300sec
    PcapOverTcp::reconnect_min=1e300sec PcapOverTcp::reconnect_max=1e300sec
    PcapOverTcp::idle_timeout=1e300sec PcapOverTcp::header_timeout=1e300sec
    PcapOverTcp::keepalive_idle=1e300sec PcapOverTcp::keepalive_interval=1e300sec)

make-capture pcap capture.pcap || exit 1
total=14

port=$(serve_nc capture.pcap)
zeek_endpoint "127.0.0.1:$port" connect PcapOverTcp::open_timeout=1e300sec "${huge[@]}" -e "$(processed_marker "$total")"
echo "connect: status $?; $(cat connect/processed 2>/dev/null || echo 'no packets processed')"
grep -i "panic\|internal error\|abort" connect/stderr || echo "connect: no panic, no internal error"

port=$(free-port)
zeek_listening listen 40 "tcp-listen://127.0.0.1:$port" allow_network_time_forward=F \
    "${huge[@]}" -e "$(processed_marker "$total")"
head -c 24 capture.pcap >header.pcap
mkfifo quiet
timeout 30 sh -c "cat quiet | nc -N 127.0.0.1 $port >/dev/null" &
pids="$pids $!"
exec 3>quiet
cat header.pcap >&3
wait_for_count listen/stderr " connected" 1 10 || echo "the quiet sender did not connect"
timeout 30 nc -N 127.0.0.1 "$port" <capture.pcap >/dev/null
wait_for_count listen/stderr " left after " 1 10 || echo "the good sender did not leave"
exec 3>&-
wait_for_line listen/processed "$total packets processed" 10 || echo "not all $total packets processed"
echo "listen, quiet sender gone: $(cat listen/processed 2>/dev/null || echo 'no packets processed')"
sigterm_within "$zeek" 5
grep -i "panic\|internal error\|abort" listen/stderr || echo "listen: no panic, no internal error"
