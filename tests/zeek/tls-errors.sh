# PCAP-over-TLS, connecting (pcapovertcp::tls://) with reconnect=F: each
# way the TLS set-up or handshake fails is one fatal line that says why, and
# Zeek exits with status 1:
# - a server whose CA is not among the system's roots (no tls_ca_file;
#   SSL_CERT_FILE sets the roots);
# - one whose certificate is not valid for tls_server_name=wrong.example;
# - one whose certificate expired (2020-01-02);
# - one whose certificate comes from another CA than tls_ca_file's;
# - a plaintext PCAP-over-IP server (nc);
# - socat requiring a client certificate that Zeek does not have, and one
#   refusing the certificate Zeek has (another CA);
# - configuration errors, found before connecting: an unreadable CA file, a
#   CA file without certificates, a key that does not match the
#   certificate, a certificate without its key; a tls-listen:// without
#   a certificate, or with tls_allowed_names but no CA file.
# With reconnect=T (the default), an unknown CA is a warning within 2 s and
# Zeek keeps trying (socat counts the connections) until SIGTERM.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v openssl && command -v socat && command -v nc
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids 2>/dev/null' EXIT
pids=

make-certs pki
trace=$TRACES/http/bro.org.pcap
run=0

# try_scheme SCHEME WHAT ZEEK_ARGS...: zeek -i
# pcapovertcp::SCHEME://127.0.0.1:$port (reconnect off); prints its status
# and its normalised output.
try_scheme() {
    local scheme=$1 what=$2
    shift 2
    run=$((run + 1))
    zeek_endpoint "$scheme://127.0.0.1:$port" "run-$run" "$@"
    echo "-- $what: status $?"
    port_lines "run-$run/stderr" "$port" | grep -v "^$"
}

# try WHAT ZEEK_ARGS...: against the TLS server started before.
try() {
    try_scheme tls "$@"
}

# tls_server CERT KEY [SOCAT_OPTIONS]: socat serving the trace over TLS to
# one client; sets $port.
tls_server() {
    port=$(free-port)
    timeout 30 socat "OPENSSL-LISTEN:$port,bind=127.0.0.1,reuseaddr,cert=pki/$1,key=pki/$2${3:+,$3}" \
        SYSTEM:"cat $trace" >/dev/null 2>&1 &
    pids="$pids $!"
    wait-listen "$port" 10
}

# The system's roots, as rustls-native-certs finds them: SSL_CERT_FILE
# makes them a bundle that lacks our CA, whatever the machine has (and one
# with it: then the stream is read).
tls_server srv.pem srv.key verify=0
SSL_CERT_FILE=$PWD/pki/ca2.pem try "system roots, our CA not among them"
tls_server srv.pem srv.key verify=0
SSL_CERT_FILE=$PWD/pki/ca.pem try "system roots with our CA"

tls_server srv.pem srv.key verify=0
try "wrong name" PcapOverTcp::tls_ca_file=../pki/ca.pem PcapOverTcp::tls_server_name=wrong.example

tls_server expired.pem expired.key verify=0
try "expired" PcapOverTcp::tls_ca_file=../pki/ca.pem

tls_server other.pem other.key verify=0
try "another CA" PcapOverTcp::tls_ca_file=../pki/ca.pem

port=$(free-port)
timeout 30 nc -N -l 127.0.0.1 "$port" <"$trace" >/dev/null 2>&1 &
pids="$pids $!"
wait-listen "$port" 10
try "plaintext server" PcapOverTcp::tls_ca_file=../pki/ca.pem

tls_server srv.pem srv.key verify=1,cafile=pki/ca.pem
try "client certificate required, none given" PcapOverTcp::tls_ca_file=../pki/ca.pem

tls_server srv.pem srv.key verify=1,cafile=pki/ca2.pem
try "client certificate from a CA the server does not know" PcapOverTcp::tls_ca_file=../pki/ca.pem \
    PcapOverTcp::tls_cert_file=../pki/client.pem PcapOverTcp::tls_key_file=../pki/client.key

# Configuration errors: nothing listens on the port, they come first.
port=$(free-port)
try "unreadable CA file" PcapOverTcp::tls_ca_file=/nonexistent/ca.pem
try "CA file without a certificate" PcapOverTcp::tls_ca_file=../pki/srv.key
try "key not matching the certificate" PcapOverTcp::tls_ca_file=../pki/ca.pem \
    PcapOverTcp::tls_cert_file=../pki/client.pem PcapOverTcp::tls_key_file=../pki/srv.key
try "certificate without key" PcapOverTcp::tls_ca_file=../pki/ca.pem PcapOverTcp::tls_cert_file=../pki/client.pem

# And on a listener.
try_listen() {
    try_scheme tls-listen "$@"
}
echo 'redef PcapOverTcp::tls_allowed_names = {"sender-a"};' >allowed.zeek
try_listen "tls-listen:// without a certificate"
try_listen "allowed names without a CA file" PcapOverTcp::tls_cert_file=../pki/srv.pem \
    PcapOverTcp::tls_key_file=../pki/srv.key ../allowed.zeek

echo "-- reconnect=T, unknown CA"
port=$(free-port)
timeout 30 socat -d -d "OPENSSL-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,cert=pki/other.pem,key=pki/other.key,verify=0" \
    SYSTEM:"cat $trace" >/dev/null 2>socat.log &
pids="$pids $!"
wait-listen "$port" 10
mkdir retry
(cd retry && zeek_bounded 30 -i "pcapovertcp::tls://127.0.0.1:$port" PcapOverTcp::tls_ca_file=../pki/ca.pem \
    "$(parsed_stamp_script "$PWD/parsed")" >stdout 2>stderr) &
zeek=$!
pids="$pids $zeek"
wait_source_open retry/stderr || echo "the source did not open within 30 s"
wait_for_line retry/stderr "unknown CA" 2 && echo "warned within 2 s" || echo "no warning within 2 s"
# The retries back off from 100 ms (doubling): a few within 3 s.
wait_for_count socat.log "accepting connection" 4 5 && echo "connected again and again" ||
    echo "fewer than 4 connections within 5 s: $(grep -c "accepting connection" socat.log)"
kill -0 $zeek && echo "still running"
sigterm_within $zeek 2
port_lines retry/stderr "$port" | grep "^warning"
