# Senders stay apart (policy/frameworks/conn_key/pcapovertcp/sender): two
# senders replay the same trace, the second shifted by one second, so every
# connection's 5-tuple arrives from both. With the policy script, conn.log
# (and every log with a conn_id) has each connection twice, once per
# sender, named in id.ctx.pcapovertcp_sender, and each sender's rows equal
# `zeek -r` of its own trace (sender-compare: on every column but uid and
# the new one). Without it, the logs are what they were before: the two
# copies are one connection, as in `zeek -r` of the two traces merged.
# Two listening senders (127.0.0.1, named by PcapOverTcp::sender_names, and
# ::1, unnamed), then two connect endpoints (named as written). With the
# listening senders, each connection is also looked up by its conn_id
# (sender-lookups.zeek: the factory's key from a script value).
# @TEST-REQUIRES: test -d "$TRACES" && test -x "$SERVE"
# @TEST-REQUIRES: command -v nc && command -v mergecap && command -v editcap && command -v capinfos
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids 2>/dev/null' EXIT
pids=

cp "$TRACES/http/bro.org.pcap" a.pcap
editcap -t 1 a.pcap b.pcap
mergecap -w merged.pcap a.pcap b.pcap
total=$(capinfos -T -c -M -r merged.pcap | cut -f2)
echo "a.pcap and b.pcap (a shifted by 1 s): $total packets together"
zeek_offline "$PWD/a.pcap" offline-a
zeek_offline "$PWD/b.pcap" offline-b
zeek_offline "$PWD/merged.pcap" offline-merged
key=policy/frameworks/conn_key/pcapovertcp/sender
echo 'redef PcapOverTcp::sender_names += { [127.0.0.0/8] = "site-a" };' >names.zeek

# listen DIR [ZEEK_ARGS...]: a listening Zeek on 127.0.0.1 and [::1]; a.pcap
# from 127.0.0.1, b.pcap from ::1, both admitted before any packet flows.
listen() {
    local dir=$1 p4 p6 zeek
    shift
    p4=$(free-port)
    p6=$(free-port -6)
    rm -f fa fb go
    mkfifo fa fb
    mkdir "$dir"
    (cd "$dir" && zeek_bounded 50 -i "pcapovertcp::tcp-listen://127.0.0.1:$p4,tcp-listen://[::1]:$p6" \
        allow_network_time_forward=F PcapOverTcp::merge_window=5sec "$@" \
        -e "$(processed_marker "$total")" >stdout 2>stderr) &
    zeek=$!
    pids="$pids $zeek"
    wait_for_line "$dir/stderr" "senders may connect now" 10 || echo "$dir: zeek is not listening"
    timeout 40 sh -c "cat fa | nc -N 127.0.0.1 $p4 >/dev/null" &
    pids="$pids $!"
    timeout 40 sh -c "cat fb | nc -N ::1 $p6 >/dev/null" &
    pids="$pids $!"
    feed_headers_then go fa a.pcap fb b.pcap
    wait_for_count "$dir/stderr" " connected" 2 10 || echo "$dir: not both senders connected"
    touch go
    wait_for_count "$dir/stderr" " left after " 2 30 || echo "$dir: not both senders left"
    wait_for_line "$dir/processed" "$total packets processed" 30 || echo "$dir: not all $total packets processed"
    sigterm_within $zeek 2
}

# connect DIR [ZEEK_ARGS...]: Zeek connects to two servers, one serving
# a.pcap, the other b.pcap; prints their ports as "PA PB" into DIR.ports.
connect() {
    local dir=$1 pa pb zeek
    shift
    timeout 60 "$SERVE" --listen 127.0.0.1:0 --port-file pa.port --clients 1 a.pcap >/dev/null 2>&1 &
    pids="$pids $!"
    timeout 60 "$SERVE" --listen 127.0.0.1:0 --port-file pb.port --clients 1 b.pcap >/dev/null 2>&1 &
    pids="$pids $!"
    pa=$(read_port_file pa.port) || echo "server a did not start"
    pb=$(read_port_file pb.port) || echo "server b did not start"
    echo "$pa $pb" >"$dir.ports"
    mkdir "$dir"
    (cd "$dir" && zeek_bounded 50 -i "pcapovertcp::127.0.0.1:$pa,127.0.0.1:$pb" allow_network_time_forward=F \
        PcapOverTcp::reconnect=F PcapOverTcp::merge_window=5sec "$@" >stdout 2>stderr) &
    zeek=$!
    wait $zeek
    echo "status $?"
}

echo "=== two listening senders, with $key"
listen listen-key "$key" "$PWD/names.zeek" "$SCRIPTS/sender-lookups.zeek"
cat listen-key/stdout
sender-compare id.ctx.pcapovertcp_sender listen-key site-a=offline-a ::1=offline-b
echo "=== two listening senders, without it"
listen listen-plain
drop_sender_lines listen-plain
compare-logs offline-merged listen-plain && echo "logs as zeek -r of the merged traces"

echo "=== two connect endpoints, with $key"
connect connect-key "$key"
read -r pa pb <connect-key.ports
sender-compare id.ctx.pcapovertcp_sender connect-key "127.0.0.1:$pa=offline-a" "127.0.0.1:$pb=offline-b" |
    sed -e "s/127.0.0.1:$pa\\b/127.0.0.1:PORT_A/g" -e "s/127.0.0.1:$pb\\b/127.0.0.1:PORT_B/g"
echo "=== two connect endpoints, without it"
connect connect-plain
grep -v "no pcap header has arrived after" connect-plain/reporter.log >connect-plain/reporter.tmp
mv connect-plain/reporter.tmp connect-plain/reporter.log
compare-logs offline-merged connect-plain && echo "logs as zeek -r of the merged traces"
