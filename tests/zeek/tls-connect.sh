# PCAP-over-TLS, connecting (pcapovertcp::tls://): Zeek reads a trace from
# TLS servers this project did not write, and its logs equal those of
# `zeek -r` on the same trace:
# - socat OPENSSL-LISTEN (verify=0) serving bro.org.pcap;
# - socat OPENSSL-LISTEN with verify=1 and the CA: it requires a client
#   certificate, which Zeek presents (tls_cert_file, tls_key_file);
# - ncat --ssl --send-only serving a pcapng of three interfaces, verified
#   by name (tls_server_name=localhost, while the endpoint is 127.0.0.1);
# - openssl s_server serving bro.org.pcap (see tls_server_after_handshake
#   in lib.sh for why its standard input is fed only after the handshake),
#   once with TLS 1.3 and once limited to TLS 1.2 (-tls1_2) serving a
#   Teredo trace.
# Each server's certificate is checked against tls_ca_file (a throw-away CA).
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v openssl && command -v socat && command -v ncat
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids $(cat s_server.pid s_server-feed.pid 2>/dev/null) 2>/dev/null' EXIT
pids=

make-certs pki
pki=$PWD/pki

# check NAME TRACE SERVER_PID ZEEK_ARGS...: zeek on tls://127.0.0.1:$port
# (the server's) vs. zeek -r TRACE; one line, then the server's status.
check() {
    local name=$1 trace=$2 server=$3
    shift 3
    zeek_offline "$trace" "offline-$name"
    if zeek_endpoint "tls://127.0.0.1:$port" "live-$name" PcapOverTcp::tls_ca_file="$pki/ca.pem" "$@"; then
        echo "$name: $(compare-logs "offline-$name" "live-$name" | tail -1)"
        # The source's own lines, but for the one saying it opened.
        port_lines "live-$name/stderr" "$port" | grep -F "tls://" | grep -v "listening on tls://"
    else
        echo "$name: zeek -i failed with status $?: $(port_lines "live-$name/stderr" "$port" | tail -1)"
    fi
    wait "$server"
    echo "$name: server exited with status $?"
}

bro=$TRACES/http/bro.org.pcap
multi=$TRACES/pcapng-multi-interface.pcapng

port=$(free-port)
timeout 30 socat "OPENSSL-LISTEN:$port,bind=127.0.0.1,reuseaddr,cert=$pki/srv.pem,key=$pki/srv.key,verify=0" \
    SYSTEM:"cat $bro" 2>socat.err &
pids="$pids $!"
wait-listen "$port" 10
check socat "$bro" $!

port=$(free-port)
timeout 30 socat "OPENSSL-LISTEN:$port,bind=127.0.0.1,reuseaddr,cert=$pki/srv.pem,key=$pki/srv.key,verify=1,cafile=$pki/ca.pem" \
    SYSTEM:"cat $bro" 2>>socat.err &
pids="$pids $!"
wait-listen "$port" 10
check socat-mtls "$bro" $! PcapOverTcp::tls_cert_file="$pki/client.pem" PcapOverTcp::tls_key_file="$pki/client.key"

port=$(free-port)
timeout 30 ncat --ssl --ssl-cert "$pki/srv.pem" --ssl-key "$pki/srv.key" --send-only -l 127.0.0.1 "$port" \
    <"$multi" 2>ncat.err &
pids="$pids $!"
wait-listen "$port" 10
check ncat "$multi" $! PcapOverTcp::tls_server_name=localhost

port=$(free-port)
tls_server_after_handshake "$port" "$bro" -cert "$pki/srv.pem" -key "$pki/srv.key"
check s_server "$bro" "$(cat s_server.pid)"
grep "^Protocol version" s_server.out

port=$(free-port)
tls_server_after_handshake "$port" "$TRACES/tunnels/Teredo.pcap" -cert "$pki/srv.pem" -key "$pki/srv.key" -tls1_2
check s_server-tls1.2 "$TRACES/tunnels/Teredo.pcap" "$(cat s_server.pid)"
grep "^Protocol version" s_server.out

cat socat.err ncat.err
