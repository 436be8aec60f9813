# Wireshark's dumpcap writes pcapng to standard output; piped into netcat
# it is a PCAP-over-IP server Zeek can read.
# @TEST-REQUIRES: test "$(id -u)" = 0
# @TEST-REQUIRES: command -v dumpcap
# @TEST-REQUIRES: command -v nc
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
set -e
port=$(free-port)
app=$(free-port)
mkfifo capture
dumpcap -q -w - -i lo -f "tcp port $app" >capture 2>dumpcap.err &
dumpcap_pid=$!
nc -N -l 127.0.0.1 "$port" <capture >/dev/null 2>&1 &
wait-listen "$port" 10
# -C: loopback captures carry checksums the kernel never filled in.
zeek_live "$port" live -C &
zeek_pid=$!
sleep 2 # dumpcap starts capturing

ping-pong "$app" 2

sleep 1
kill -INT "$dumpcap_pid"
wait "$zeek_pid"
echo "zeek exit status: $?"
zeek-cut proto id.resp_p orig_bytes resp_bytes conn_state <live/conn.log | sed "s/\t$app\t/\tAPP\t/" | sort
