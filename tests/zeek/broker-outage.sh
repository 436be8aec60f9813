# A listening Zeek fed by pcapovertcp-serve --connect is stopped in the
# middle of a stream and a second one is started on the same port: every
# packet sent while it was down is in the second Zeek's conn.log, none is in
# both, and the accounting closes exactly: sent = analysed by the first +
# its unanalysed count (the plugin's line at exit) + the broker's in-flight
# count + analysed by the second + dropped by the broker.
#
# Each packet is its own UDP flow (10.x.y.z:40000 -> 10.200.0.1:9999), so
# conn.log names every packet Zeek analysed.
# @TEST-REQUIRES: command -v python3
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids 2>/dev/null' EXIT
pids=

cat >gen.py <<'PY'
import struct, sys

def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff

def packet(i):
    payload = struct.pack("!I", i) + b"\0" * 16
    udp = struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0) + payload
    src = bytes([10, 1 + (i >> 16), (i >> 8) & 255, i & 255])
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xffff, 0, 64, 17, 0, src, bytes([10, 200, 0, 1]))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + udp

out = sys.stdout.buffer
first, last = int(sys.argv[1]), int(sys.argv[2])
if sys.argv[3:] == ["header"]:
    out.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
for i in range(first, last):
    p = packet(i)
    # 1 ms apart from 2021-01-01.
    t = 1609459200 * 1000000 + i * 1000
    out.write(struct.pack("<IIII", t // 1000000, t % 1000000, len(p), len(p)) + p)
out.flush()
PY

# analysed DIR: the packet numbers in DIR's conn.log, one a line, sorted.
analysed() {
    zeek-cut id.orig_h <"$1/conn.log" | awk -F. '{ print ($2 - 1) * 65536 + $3 * 256 + $4 }' | sort
}

# unanalysed DIR: the count in the plugin's line at exit, 0 without one.
unanalysed() {
    grep -o 'closing with [0-9]* packets\{0,1\} received but not analysed' "$1/stderr" |
        awk '{ n += $3 } END { print n + 0 }'
}

export ZEEK_PLUGIN_ACTIVATE=Zeek::PcapOverTcp
port=$(free-port)
# Zeek's default scripts: slow enough that the first Zeek is stopped with
# packets it has received and not analysed.
args=(allow_network_time_forward=F)

zeek_listening z1 60 "tcp-listen://127.0.0.1:$port" "${args[@]}"
z1=$zeek

mkfifo input
"$SERVE" --connect "127.0.0.1:$port" - <input 2>serve.err &
serve=$!
pids="$pids $serve"
# Bounded: a broker that never opened its input is no reason to hang.
exec 3<>input

# 1. 30,000 packets while the first Zeek runs; it is stopped at once, in
# the middle of analysing them.
timeout 30 python3 gen.py 0 30000 header >&3
wait_for_line z1/stderr "connected" 10 || echo "the broker did not connect to the first Zeek"
sigterm_within $z1 10 >/dev/null

# 2. 20,000 packets while no Zeek runs.
timeout 30 python3 gen.py 30000 50000 >&3
wait_for_line serve.err "lost in flight" 15 || echo "the broker did not see the first Zeek go"

# 3. The second Zeek on the same port; 10,000 more packets; the input ends.
# Not holding the input's write end (fd 3): its end is the broker's.
zeek_listening z2 60 "tcp-listen://127.0.0.1:$port" "${args[@]}" 3>&-
z2=$zeek
wait_for_line serve.err ": back; sending the stream's header, then the " 15 || echo "the broker did not come back"
timeout 30 python3 gen.py 50000 60000 >&3
exec 3>&-
timeout 30 tail --pid=$serve -f /dev/null
wait $serve
echo "broker status $?"
wait_for_line z2/stderr " left after " 30 || echo "the broker's stream did not end"
# The second Zeek's reader saw the end; let Zeek analyse what it read.
sleep 2
sigterm_within $z2 10 >/dev/null

analysed z1 >one
analysed z2 >two
n1=$(wc -l <one)
n2=$(wc -l <two)
u1=$(unanalysed z1)
u2=$(unanalysed z2)
f=$(grep -o '[0-9]* packets sent were not acknowledged' serve.err | awk '{ n += $1 } END { print n + 0 }')
d=$(grep -o 'counters: target=[^ ]* .* dropped=[0-9]*' serve.err | sed 's/.* dropped=//')
sent=60000

# How the first Zeek's share splits (analysed or not) depends on timing:
# kept for the record, not compared.
echo "first Zeek: $n1 analysed, $u1 unanalysed; broker: $f in flight" >split
echo "packets in both Zeeks' logs: $(comm -12 one two | wc -l)"
missing=$(seq 30000 49999 | sort | comm -23 - two | wc -l)
echo "packets sent while no Zeek ran that the second Zeek did not analyse: $missing"
echo "the second Zeek's unanalysed count: $u2"
if [ $((n1 + u1 + f + n2 + ${d:-0})) -eq $sent ]; then
    echo "sent = analysed by the first + its unanalysed + in flight + analysed by the second + dropped"
else
    echo "accounting does not close: sent $sent, first $n1 + unanalysed $u1 + in flight $f + second $n2 + dropped ${d:-?}"
fi
echo "$sent $n1 $u1 $f $n2 ${d:-?}" >figures
