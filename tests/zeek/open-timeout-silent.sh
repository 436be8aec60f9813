# open_timeout is a deadline for a stream header, whatever the server does:
# with one that accepts and then stays silent, Zeek runs meanwhile (the
# source opens at once: zeek_init has run) and ends within open_timeout
# plus a second of zeek_init, with one fatal line naming the endpoint
# (status 1), after a warning that says what Zeek is waiting for. The same
# for a server that sends half a header.
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
printf '\xd4\xc3\xb2\xa1\x02\x00\x04' >half-header
for limit in 0 7; do
    port=$(stream_server --limit $limit --after hold half-header)
    timeout 30 zeek -i "pcapovertcp::127.0.0.1:$port" PcapOverTcp::open_timeout=2sec \
        -e 'event zeek_init() { print fmt("%.6f", time_to_double(current_time())); }' >stdout 2>err
    status=$?
    took=$(elapsed_since "$(cat stdout)")
    echo "-- server sends $limit bytes: status $status"
    # Without the script location Zeek gives the lines (-e's here).
    sed -e "s/$port/PORT/g" -e 's/^\(warning\|fatal error\) in <[^>]*>, line [0-9]*:/\1:/' err |
        without_zeek_open_lines
    [ -s stdout ] && echo "zeek_init ran" || echo "zeek_init did not run"
    awk -v t="$took" 'BEGIN { exit !(t < 3) }' && echo "ended within 3 s of zeek_init" || echo "took $took s after zeek_init"
    kill "$(cat stream-server.pid)"
done
