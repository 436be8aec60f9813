# Compression for thin links: zeek -i pcapovertcp::tcp+zstd://HOST:PORT
# reading pcapovertcp-serve --listen tcp+zstd:// (the stream zstd-compressed
# between them) gives the logs of zeek -r, for a pcap, a pcapng and a
# big-endian trace.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"

# serve_zstd FILE: serves FILE compressed to one client; prints the port.
serve_zstd() {
    local pf
    pf=$(mktemp -u "$PWD/port.XXXXXX")
    "$SERVE" --listen tcp+zstd://127.0.0.1:0 --port-file "$pf" --clients 1 "$1" >/dev/null 2>&1 &
    read_port_file "$pf"
}

status=0
for t in http/206_example_b.pcap irc-dcc-send.pcapng \
    smb/dssetup_DsRoleGetPrimaryDomainInformation_standalone_workstation.cap; do
    name=$(echo "$t" | tr / _)
    zeek_offline "$TRACES/$t" "offline-$name"
    port=$(serve_zstd "$TRACES/$t") || { echo "$name: server did not start"; status=1; continue; }
    if ! zeek_endpoint "tcp+zstd://127.0.0.1:$port" "live-$name"; then
        echo "$name: zeek -i failed: $(tail -1 "live-$name/stderr")"
        status=1
        continue
    fi
    if compare-logs "offline-$name" "live-$name" >"diff-$name"; then
        echo "$name: identical"
    else
        echo "$name: DIFFERENT"
        cat "diff-$name"
        status=1
    fi
done
exit $status
