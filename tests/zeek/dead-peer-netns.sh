# A server whose host stops answering is noticed by TCP keepalive within the
# documented bound (keepalive_idle + keepalive_probes * keepalive_interval),
# reported once, and the source reconnects once the host is back. Zeek and
# the server run in two network namespaces of the test's own, joined by a
# veth pair; "the host stops answering" is the server side's link set down.
# @TEST-REQUIRES: test "$(id -u)" = 0 && command -v ip && ip netns list
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
export ZEEK_PLUGIN_ACTIVATE=Zeek::PcapOverTcp
id=$$
nz=pot-z-$id ns=pot-s-$id vz=potz$((id % 100000)) vs=pots$((id % 100000))
net=10.231.$((id % 250)).
cleanup() {
    [ -n "${zeek_pid:-}" ] && kill -TERM "$zeek_pid" 2>/dev/null
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del "$nz" 2>/dev/null
    ip netns del "$ns" 2>/dev/null
}
trap cleanup EXIT
ip netns add "$nz"
ip netns add "$ns"
ip link add "$vz" netns "$nz" type veth peer name "$vs" netns "$ns"
ip -n "$nz" addr add "${net}1/30" dev "$vz"
ip -n "$ns" addr add "${net}2/30" dev "$vs"
for n in "$nz" "$ns"; do ip -n "$n" link set lo up; done
ip -n "$nz" link set "$vz" up
ip -n "$ns" link set "$vs" up

rm -f pf
ip netns exec "$ns" stream-server --listen "${net}2:0" --port-file pf --after hold "$TRACES/dns53.pcap" >/dev/null 2>&1 &
for _ in $(seq 200); do [ -s pf ] && break; sleep 0.05; done
port=$(cat pf)
ep="${net}2:$port"

# Keepalive bound here: 1 + 2 * 1 = 3 s.
ip netns exec "$nz" zeek -b -i "pcapovertcp::$ep" \
    PcapOverTcp::keepalive_idle=1sec PcapOverTcp::keepalive_interval=1sec PcapOverTcp::keepalive_probes=2 \
    PcapOverTcp::reconnect_min=100msec PcapOverTcp::reconnect_max=500msec \
    -e 'event zeek_done() { print fmt("connects %d", PcapOverTcp::stats()$connects); }' \
    >out 2>err &
zeek_pid=$!
wait_for_line err "listening on" 10 || echo "Zeek did not open the source"
sleep 3 # the one packet delivered, then quiet: probes go out and are answered
grep -q "lost" err && echo "a healthy quiet peer was taken for dead"

ip -n "$ns" link set "$vs" down
t0=$(date +%s.%N)
if wait_for_line err "stopped answering" 10; then
    took=$(elapsed_since "$t0")
    awk -v t="$took" 'BEGIN { exit !(t <= 4) }' && echo "dead peer reported within the bound (3 s + 1 s)" || echo "dead peer reported after $took s"
else
    echo "dead peer not reported within 10 s"
fi
ip -n "$ns" link set "$vs" up
wait_for_line err "connection restored" 15 && echo "reconnected once the link was back"
kill -TERM "$zeek_pid"
wait "$zeek_pid"
zeek_pid=
cat out
sed -E -e "s/$ep/ENDPOINT/g" -e "s/after [0-9.]+ s/after N s/" -e "s/^[0-9.]+ //" err | grep -v "received termination signal\|packets received on interface\|listening on"
