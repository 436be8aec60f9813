# While packets keep coming, each of Zeek's poll turns (one per
# io_poll_interval_live = 10 packets with a live source) costs one
# epoll_wait, as with a trace: no ppoll() (after a packet the source asks
# for a zero timeout instead of one derived from Zeek's timers) and no
# FIONREAD ioctl on the wake fd (it turns readable only to wake an idle
# Zeek). Counted with strace on Zeek's main thread over 66,536 packets;
# without either measure, each costs one syscall per 10 packets.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v strace
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
port=$(serve_tool "$TRACES/ftp/cwd-navigation.pcap" --loop 8)
# Without -f, strace follows only the main thread, Zeek's event loop.
ZEEK_PLUGIN_ACTIVATE=Zeek::PcapOverTcp timeout 120 strace -o trace.txt -e trace=ppoll,ioctl,epoll_wait \
    "$(command -v zeek)" -b -i "pcapovertcp::127.0.0.1:$port" PcapOverTcp::reconnect=F allow_network_time_forward=F \
    -e 'event zeek_done() { print fmt("packets: %d", get_net_stats()$pkts_recvd); }' >stdout 2>stderr
cat stdout
packets=$(awk '/^packets:/ {print $2}' stdout)
per_1000() { awk -v n="$1" -v p="$packets" 'BEGIN { printf "%.1f", 1000 * n / p }'; }
# Loose bounds: a few turns at start-up and at the end wait for real.
epoll=$(grep -c '^epoll_wait' trace.txt)
ppoll=$(grep -c '^ppoll' trace.txt)
fionread=$(grep -c 'FIONREAD' trace.txt)
echo "epoll_wait per 1000 packets between 50 and 150: $(awk -v x="$(per_1000 "$epoll")" 'BEGIN { print (x >= 50 && x <= 150) ? "yes" : "no (" x ")" }')"
echo "ppoll per 1000 packets under 5: $(awk -v x="$(per_1000 "$ppoll")" 'BEGIN { print (x < 5) ? "yes" : "no (" x ")" }')"
echo "FIONREAD per 1000 packets under 5: $(awk -v x="$(per_1000 "$fionread")" 'BEGIN { print (x < 5) ? "yes" : "no (" x ")" }')"
