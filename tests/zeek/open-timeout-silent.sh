# open_timeout is a deadline for a stream header, whatever the server does:
# one that accepts and then stays silent ends Zeek within open_timeout plus
# a second, with one fatal line naming the endpoint, after a warning that
# says what Zeek is waiting for. The same for a server that sends half a
# header. The time is counted from the end of Zeek's script parsing (its
# start-up before Open() is not the source's doing and varies with the
# machine's load and Zeek's version).
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
printf '\xd4\xc3\xb2\xa1\x02\x00\x04' >half-header
for limit in 0 7; do
    port=$(stream_server --limit $limit --after hold half-header)
    timeout 30 zeek -i "pcapovertcp::127.0.0.1:$port" PcapOverTcp::open_timeout=2sec "$(parsed_stamp_script "$PWD/parsed-$limit")" >/dev/null 2>err
    status=$?
    took=$(since_parsed "parsed-$limit")
    echo "-- server sends $limit bytes: status $status"
    sed -e "s/$port/PORT/g" err
    awk -v t="$took" 'BEGIN { exit !(t < 4) }' && echo "ended within 4 s" || echo "took $took s"
    kill "$(cat stream-server.pid)"
done
