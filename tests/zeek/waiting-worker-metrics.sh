# A worker whose server is down is a normal, observable Zeek (docs/failures.md,
# "What failures look like"): the source opens at once, so zeek_init runs, the
# Prometheus endpoint (Telemetry::metrics_port; from Zeek 9.0 it is started
# in zeek_init) answers a scrape with the source's own metrics, and the
# wait is reported in one line naming the endpoint, all while Zeek keeps
# waiting for its feed; SIGTERM ends it as any running Zeek. Before, a
# connect source held Zeek in Open() until a stream header arrived.
# @TEST-REQUIRES: command -v curl
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
port=$(free-port) # nobody listens there
mp=$(free-port)
(exec timeout --foreground -k 5 60 zeek -i "pcapovertcp::127.0.0.1:$port" Telemetry::metrics_port="$mp/tcp" \
    PcapOverTcp::buffer_size=4*1024*1024 -e 'event zeek_init() { print "zeek_init ran"; }' >stdout 2>stderr) &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
wait_for_line stderr "waiting for a stream" 10 && echo "the wait is reported" || echo "no wait reported within 10 s"
# Scrapes for 10 s at most (a scrape that hangs counts too).
scraped=
end=$((SECONDS + 10))
while [ $SECONDS -lt $end ]; do
    if curl -s --max-time 2 "http://127.0.0.1:$mp/metrics" >metrics 2>/dev/null &&
        grep -q '^zeek_pcapovertcp_buffer_capacity' metrics; then
        scraped=1
        break
    fi
    sleep 0.1
done
[ -n "$scraped" ] && echo "the metrics endpoint answers" || echo "no metrics from the source within 10 s"
# metric{...endpoint="E"...} VALUE -> metric E VALUE
sed -n -e 's/^\(zeek_pcapovertcp_buffer_capacity[a-z_]*\){.*endpoint="\([^"]*\)".*} \([0-9.e+]*\)$/\1 \2 \3/p' metrics |
    sed -e "s/:$port\\b/:PORT/g"
kill -0 $pid 2>/dev/null && echo "still waiting for its feed"
sigterm_within $pid 5
cat stdout
# The wait's line, without the script location Zeek gives it.
grep -F "waiting for a stream" stderr | sed -e "s/:$port\\b/:PORT/g" -e 's/^warning in [^:]*, line [0-9]*: /warning: /'
