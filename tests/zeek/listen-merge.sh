# Listening (pcapovertcp::tcp-listen://): three senders connect at once and
# push overlapping streams of different formats: netcat with an Ethernet
# pcap (microseconds), pcapovertcp-serve --connect relaying a pcapng of
# three interfaces (two Ethernet, one raw IPv4) from its standard input, and
# netcat with a nanosecond pcap. All three are admitted (their headers
# sent) before any packet flows (each reads a fifo that is filled only
# then), and the merge window
# is long enough that scheduling cannot reorder: Zeek's logs equal those of
# `zeek -r` on mergecap's timestamp-ordered merge of the three files.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v nc && command -v mergecap && command -v editcap && command -v capinfos
# @TEST-REQUIRES: zeek-reads-mixed-pcapng
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids 2>/dev/null' EXIT
pids=

merge_inputs
echo "b.pcapng link types: $(capinfos b.pcapng | sed -n 's/^ *Encapsulation = //p' | sort | uniq -c | xargs)"
mergecap -w merged.pcapng a.pcap b.pcapng c.pcap
total=$(capinfos -T -c -M -r merged.pcapng | cut -f2)
zeek_offline "$PWD/merged.pcapng" offline

# Senders are counted by IP address: all three are one, 127.0.0.1.
print_senders=$(senders_script)
port=$(free-port)
zeek_listening live 50 "tcp-listen://127.0.0.1:$port" allow_network_time_forward=F \
    PcapOverTcp::merge_window=5sec -e "$print_senders $(processed_marker "$total")"

mkfifo fa fb fc
timeout 40 sh -c "cat fa | nc -N 127.0.0.1 $port >/dev/null" &
pids="$pids $!"
timeout 40 sh -c "cat fb | \"\$SERVE\" --connect 127.0.0.1:$port - >/dev/null 2>serve.err" &
pids="$pids $!"
timeout 40 sh -c "cat fc | nc -N 127.0.0.1 $port >/dev/null" &
pids="$pids $!"
# A sender is admitted (reported "connected") once its header is whole:
# the headers first, then the packets once all three are admitted.
feed_headers_then go fa a.pcap fb b.pcapng fc c.pcap
wait_for_count live/stderr " connected" 3 10 || echo "not all senders connected"
touch go
wait_for_count live/stderr " left after " 3 30 || echo "not all senders left"
wait_for_line live/processed "$total packets processed" 30 || echo "not all $total packets processed"
sigterm_within $zeek 2

listen_senders_lines live/stderr "$port" | sort
cat live/stdout
# The per-sender lines are the live run's own; the rest must be equal.
drop_sender_lines live
compare-logs offline live
