# A live capture: `tcpdump -U -w - -i lo` piped into netcat, read by Zeek
# while the traffic happens. Three known TCP exchanges on a loopback port
# must appear in conn.log; stopping tcpdump ends the stream and Zeek.
# @TEST-REQUIRES: test "$(id -u)" = 0
# @TEST-REQUIRES: command -v tcpdump
# @TEST-REQUIRES: command -v nc
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
set -e
port=$(free-port)
app=$(free-port)
mkfifo capture
tcpdump -U -w - -i lo "tcp port $app" >capture 2>tcpdump.err &
tcpdump_pid=$!
nc -N -l 127.0.0.1 "$port" <capture >/dev/null 2>&1 &
wait-listen "$port" 10
# -C: loopback captures carry checksums the kernel never filled in.
zeek_live "$port" live -C &
zeek_pid=$!
for _ in $(seq 500); do grep -q "listening on" tcpdump.err && break; sleep 0.02; done

ping-pong "$app" 3

sleep 1 # let tcpdump see the last FIN/ACKs before it is stopped
kill -INT "$tcpdump_pid"
wait "$zeek_pid"
echo "zeek exit status: $?"
zeek-cut proto id.resp_h id.resp_p orig_bytes resp_bytes conn_state <live/conn.log | sed "s/\t$app\t/\tAPP\t/" | sort
