# Needs nothing but Zeek, python3 and this repository (zkg's test_command runs
# the `installed` group in a fresh clone, without ../shared/traces): a capture
# built at test time (Scripts/make-capture: DNS over UDP and an HTTP exchange
# over TCP), written as pcap and as pcapng, served by pcapovertcp-serve and
# read with `zeek -i pcapovertcp::...`, gives the same logs as `zeek -r` on the
# file, and those logs show the DNS answer, the HTTP request and its status.
# @TEST-GROUP: installed
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
# serve_tool starts "$SERVE" in the background: bound it like every wait.
printf '#!/bin/sh\nexec timeout 60 "%s" "$@"\n' "$SERVE" >serve
chmod +x serve
SERVE=$PWD/serve

for format in pcap pcapng; do
    echo "=== $format"
    file=$PWD/capture.$format
    make-capture "$format" "$file" || exit 1
    if ! zeek_offline "$file" "offline-$format"; then
        echo "zeek -r failed:"; cat "offline-$format/stderr"; continue
    fi
    port=$(serve_tool "$file") || { echo "pcapovertcp-serve did not start"; continue; }
    zeek_live "$port" "live-$format" || { echo "zeek -i failed (status $?):"; cat "live-$format/stderr"; }
    compare-logs "offline-$format" "live-$format"
    for log in conn dns http; do
        [ -f "live-$format/$log.log" ] || echo "no $log.log"
    done
    echo "--- conn.log"
    zeek-cut id.orig_h id.orig_p id.resp_h id.resp_p proto service conn_state history orig_pkts resp_pkts <"live-$format/conn.log" | sort
    echo "--- dns.log"
    zeek-cut id.orig_p query qtype_name rcode_name answers <"live-$format/dns.log" | sort
    echo "--- http.log"
    zeek-cut method host uri user_agent status_code status_msg resp_mime_types response_body_len <"live-$format/http.log"
done
