# PCAP-over-TLS, listening with client authentication: a tls-listen://
# with PcapOverTcp::tls_ca_file (client certificates required, the default)
# and PcapOverTcp::tls_allowed_names = {"sender-a"} (from a script) closes,
# each with its own warning and after 0 packets,
# - a TLS sender without a client certificate (socat, from 127.0.0.2),
# - one whose certificate (named sender-a) comes from another CA (127.0.0.3),
# - one whose certificate from the right CA names sender-b (127.0.0.4),
# - one sending plaintext PCAP-over-IP (nc, from 127.0.0.5),
# while a good sender-a (socat, from 127.0.0.6) is read whole: the logs
# equal those of `zeek -r` on its trace alone, and the per-address counters
# show its records and no one else's; each refused one is a
# PcapOverTcp::Sender_Refused notice of kind tls. Each sender comes from its own
# loopback address so that PcapOverTcp::stats()$senders tells them apart.
# With tls_require_client_cert=F (and no allowed names), a sender without a
# client certificate is read, one with a certificate from another CA is
# still refused. Then a TLS sender (socat OPENSSL:) on a plain
# tcp-listen:// is told that it speaks TLS.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v openssl && command -v socat && command -v nc && command -v capinfos
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids 2>/dev/null' EXIT
pids=

make-certs pki
trace=$TRACES/http/bro.org.pcap
small=$TRACES/tunnels/Teredo.pcap
total=$(capinfos -T -c -M -r "$trace" | cut -f2)
zeek_offline "$trace" offline

cat >allowed.zeek <<'ZEEK'
redef PcapOverTcp::tls_allowed_names = {"sender-a"};
ZEEK
print_senders='event zeek_done() {
    local senders = PcapOverTcp::stats()$senders;
    for (i in senders)
        print fmt("sender %s: connects %d disconnects %d records %d", senders[i]$address,
            senders[i]$connects, senders[i]$disconnects, senders[i]$records);
}'
port=$(free-port)
mkdir live
(cd live && zeek_bounded 50 -i "pcapovertcp::tls-listen://127.0.0.1:$port" allow_network_time_forward=F \
    PcapOverTcp::tls_cert_file=../pki/srv.pem PcapOverTcp::tls_key_file=../pki/srv.key \
    PcapOverTcp::tls_ca_file=../pki/ca.pem ../allowed.zeek \
    -e "$print_senders $(processed_marker "$total")" "$(done_stamp_script "$PWD/done-at")" >stdout 2>stderr) &
zeek=$!
pids="$pids $zeek"
wait_for_line live/stderr "senders may connect now" 10 || echo "zeek is not listening"

# refused N TEXT COMMAND...: runs COMMAND (a sender, 15 s at most) and
# waits for the Nth warning of the listener, which must contain TEXT.
warnings=0
refused() {
    local text=$2
    shift 2
    warnings=$((warnings + 1))
    timeout 15 "$@" >/dev/null 2>>senders.err </dev/null &
    pids="$pids $!"
    wait_for_count live/stderr "warning in" $warnings 15 || echo "no warning after: $*"
    grep "warning in" live/stderr | sed -n "${warnings}p" | grep -qF -- "$text" ||
        echo "warning $warnings is not about: $text"
}
ssl="OPENSSL:127.0.0.1:$port,cafile=pki/ca.pem"
refused 1 "no client certificate" socat -u "FILE:$small" "$ssl,bind=127.0.0.2"
refused 2 "unknown CA" socat -u "FILE:$small" "$ssl,bind=127.0.0.3,cert=pki/other.pem,key=pki/other.key"
refused 3 "none of PcapOverTcp::tls_allowed_names" \
    socat -u "FILE:$small" "$ssl,bind=127.0.0.4,cert=pki/client-b.pem,key=pki/client-b.key"
refused 4 "plaintext" sh -c "exec nc -N -s 127.0.0.5 127.0.0.1 $port <'$small'"

# (Not ncat --send-only: it loses the end of a stream on tls-listen://,
# see tls-listen.sh.)
timeout 30 socat -u "FILE:$trace" "$ssl,bind=127.0.0.6,cert=pki/client.pem,key=pki/client.key" \
    >/dev/null 2>good.err </dev/null &
pids="$pids $!"
wait_for_line live/stderr " left after " 30 || echo "the good sender did not leave"
wait_for_line live/processed "$total packets processed" 30 || echo "not all $total packets processed"
sigterm_done_within $zeek 2 live/done-at # the bound is on zeek_done: see sigterm_done_within

listen_senders_lines live/stderr "$port"
sort live/stdout
cat good.err
# The per-sender lines (connected, left, the refusals) are the live run's
# own; the rest must be equal.
grep -v -F "tls-listen://127.0.0.1:$port: sender " live/reporter.log >live/reporter.tmp
mv live/reporter.tmp live/reporter.log
# So are the refusals' notices (PcapOverTcp::Sender_Refused, kind tls).
zeek-cut note sub src msg <live/notice.log | sed -e "s/:$port\b/:PORT/g"
rm live/notice.log
compare-logs offline live

# Client certificates optional.
small_total=$(capinfos -T -c -M -r "$small" | cut -f2)
zeek_offline "$small" offline-small
port=$(free-port)
mkdir optional
(cd optional && zeek_bounded 30 -i "pcapovertcp::tls-listen://127.0.0.1:$port" allow_network_time_forward=F \
    PcapOverTcp::tls_cert_file=../pki/srv.pem PcapOverTcp::tls_key_file=../pki/srv.key \
    PcapOverTcp::tls_ca_file=../pki/ca.pem PcapOverTcp::tls_require_client_cert=F \
    -e "$(processed_marker "$small_total")" "$(done_stamp_script "$PWD/done-at")" >stdout 2>stderr) &
zeek=$!
pids="$pids $zeek"
wait_for_line optional/stderr "senders may connect now" 10 || echo "zeek is not listening"
timeout 15 socat -u "FILE:$small" "OPENSSL:127.0.0.1:$port,cafile=pki/ca.pem,bind=127.0.0.2" >/dev/null 2>&1 </dev/null
echo "socat without a client certificate exited with status $?"
wait_for_line optional/stderr " left after " 10 || echo "the sender without a certificate did not leave"
wait_for_line optional/processed "$small_total packets processed" 10 || echo "not all $small_total packets processed"
timeout 15 socat -u "FILE:$small" "OPENSSL:127.0.0.1:$port,cafile=pki/ca.pem,bind=127.0.0.3,cert=pki/other.pem,key=pki/other.key" \
    >/dev/null 2>&1 </dev/null
wait_for_line optional/stderr "warning in" 10 || echo "the sender from another CA was not refused"
sigterm_done_within $zeek 2 optional/done-at # the bound is on zeek_done: see sigterm_done_within
listen_senders_lines optional/stderr "$port"
grep -v -F "tls-listen://127.0.0.1:$port: sender " optional/reporter.log >optional/reporter.tmp
mv optional/reporter.tmp optional/reporter.log
zeek-cut note sub src <optional/notice.log
rm optional/notice.log
compare-logs offline-small optional

# A TLS sender on a plain tcp-listen://.
port=$(free-port)
mkdir plain
(cd plain && zeek_bounded 30 -i "pcapovertcp::tcp-listen://127.0.0.1:$port" allow_network_time_forward=F \
    "$(done_stamp_script "$PWD/done-at")" >stdout 2>stderr) &
zeek=$!
pids="$pids $zeek"
wait_for_line plain/stderr "senders may connect now" 10 || echo "zeek is not listening"
timeout 15 socat -u "FILE:$small" "OPENSSL:127.0.0.1:$port,cafile=pki/ca.pem" >/dev/null 2>socat-plain.err </dev/null
echo "socat on tcp-listen:// exited with status $? ($(grep -c . socat-plain.err) error lines)"
wait_for_line plain/stderr "warning in" 10 || echo "no warning from tcp-listen://"
sigterm_done_within $zeek 5 plain/done-at # the bound is on zeek_done: see sigterm_done_within
listen_senders_lines plain/stderr "$port"
