# pcapovertcp-serve as a PCAP-over-IP broker, with clients this project did
# not write, on loopback:
# - a trace relayed from standard input to Wireshark's PCAP-over-IP reader
#   (`tshark -i TCP@127.0.0.1:PORT`) and to `nc | tcpdump -r -`: both see
#   every packet (time, lengths and an MD5 of each frame, as `tshark -r`
#   shows the trace);
# - a larger generated trace (58 MB), fed as a busy live capture would be
#   (25 MB/s), to five netcat clients, one of them stopped (SIGSTOP) for
#   10 s: the other four get the whole stream, byte for byte, while the
#   stopped one still is, and its counter line (SIGUSR1 while stopped, then
#   at exit) shows its drops exactly: received + dropped = sent. (Fed as
#   fast as a pipe goes, the relay outruns netcat clients that share two
#   cores with it and with a parallel test, and rightly drops for them too;
#   serve/tests/broker.rs feeds at full speed, to clients that keep up.)
# @TEST-REQUIRES: test -x "$SERVE" && test -f "$TRACES/http/bro.org.pcap"
# @TEST-REQUIRES: command -v tshark && command -v tcpdump && command -v nc && command -v capinfos
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
pids=
trap 'kill -CONT $pids 2>/dev/null; kill $pids 2>/dev/null' EXIT

# frames FILE: each frame's time, lengths and MD5, as tshark reads FILE.
frames() {
    tshark -r "$1" -o frame.generate_md5_hash:TRUE -T fields \
        -e frame.time_epoch -e frame.len -e frame.cap_len -e frame.md5_hash 2>/dev/null
}

# counters_of LOG ADDR: the last counter line of the client ADDR in LOG.
counters_of() {
    grep -F " counters: client=$2 " "$1" | tail -1
}

# feed FILE RATE: FILE on standard output at RATE bytes per second.
feed() {
    python3 - "$1" "$2" <<'PY'
import sys
import time

path, rate = sys.argv[1], float(sys.argv[2])
out = sys.stdout.buffer
start, sent = time.monotonic(), 0
with open(path, "rb") as f:
    while chunk := f.read(256 * 1024):
        out.write(chunk)
        out.flush()
        sent += len(chunk)
        ahead = start + sent / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
PY
}

echo "=== tshark -i TCP@ and nc | tcpdump on a relay of bro.org.pcap"
trace=$TRACES/http/bro.org.pcap
cat "$trace" | timeout 60 "$SERVE" --listen 127.0.0.1:0 --port-file pf --wait-clients 2 - 2>relay.log &
spid=$!
pids="$pids $spid"
port=$(read_port_file pf) || echo "the relay did not start"
timeout 60 tshark -i "TCP@127.0.0.1:$port" -w tshark.pcapng >tshark.out 2>&1 &
tpid=$!
timeout 60 sh -c "nc -d 127.0.0.1 $port | tcpdump -r - -w nc.pcap" >tcpdump.out 2>&1 &
npid=$!
pids="$pids $tpid $npid"
wait "$spid" && echo "relay: exit status 0" || echo "relay: FAILED: $(cat relay.log)"
wait "$tpid" $npid
frames "$trace" >want.frames
echo "trace: $(wc -l <want.frames) packets"
for got in tshark.pcapng nc.pcap; do
    frames "$got" >got.frames
    if cmp -s want.frames got.frames; then
        echo "$got: $(wc -l <got.frames) packets, each as in the trace"
    else
        echo "$got: DIFFERENT"
        diff want.frames got.frames | head -5
    fi
done
echo "relay: $(grep -c ': stream ended; 751 packets sent, 0 dropped' relay.log) clients got all 751 packets"

echo "=== five netcat clients, one stopped for 10 s"
python3 "$PROJECT/bench/make-trace.py" big.pcap 150000 >/dev/null
sent=$(capinfos -c -M -T -r big.pcap | cut -f2)
# Not under timeout (which would take the SIGUSR1): wait_bounded bounds it.
feed big.pcap 25000000 | "$SERVE" --listen 127.0.0.1:0 --port-file pf --wait-clients 5 --client-buffer 8M - 2>broker.log &
spid=$!
pids="$pids $spid"
port=$(read_port_file pf) || echo "the broker did not start"
# The one to stop connects first, and is stopped before the stream starts
# (it starts once the five are connected).
nc -d 127.0.0.1 "$port" >paused.pcap &
paused=$!
pids="$pids $paused"
wait_for_count broker.log " connected" 1 10 || echo "the first client did not connect"
kill -STOP "$paused"
stopped=$(date +%s.%N)
paused_addr=$(grep -m1 " connected" broker.log | sed 's/.* client \([^ ]*\) connected$/\1/')
fast=
for i in 1 2 3 4; do
    nc -d 127.0.0.1 "$port" >fast$i.pcap &
    fast="$fast $!"
done
pids="$pids $fast"
# The four get the whole stream while the fifth is stopped.
for p in $fast; do
    wait_bounded "$p" 60
done
echo "fast clients done while the fifth was stopped: $(awk -v t="$(elapsed_since "$stopped")" 'BEGIN { print (t < 10 ? "yes" : "no, after " t " s") }')"
kill -USR1 "$spid"
wait_for_line broker.log "counters: total" 10 || echo "no counters after SIGUSR1"
line=$(counters_of broker.log "$paused_addr")
echo "SIGUSR1 while stopped: state $(field "$line" state), dropping: $([ "$(field "$line" dropped)" -gt 0 ] && echo yes || echo no)"
sleep "$(awk -v t="$(elapsed_since "$stopped")" 'BEGIN { s = 10 - t; print (s > 0 ? s : 0) }')"
kill -CONT "$paused"
wait_bounded "$paused" 60
wait_bounded "$spid" 60 && echo "broker: exit status 0" || echo "broker: FAILED: $(tail -5 broker.log)"
for i in 1 2 3 4; do
    cmp -s big.pcap fast$i.pcap && echo "fast client $i: the whole stream" || echo "fast client $i: DIFFERENT: $(ls -l fast$i.pcap)"
done
received=$(capinfos -c -M -T -r paused.pcap | cut -f2)
line=$(counters_of broker.log "$paused_addr")
dropped=$(field "$line" dropped)
echo "stopped client: state $(field "$line" state), got a valid pcap: $(tshark -r paused.pcap -T fields -e frame.number >/dev/null 2>&1 && echo yes || echo no)"
echo "stopped client: dropped > 0: $([ "$dropped" -gt 0 ] && echo yes || echo no)"
echo "stopped client: received = its packets counter: $([ "$received" = "$(field "$line" packets)" ] && echo yes || echo no)"
if [ $((received + dropped)) = "$sent" ]; then
    echo "stopped client: received + dropped = sent"
else
    echo "stopped client: received $received + dropped $dropped != sent $sent"
fi
total=$(grep -F " counters: total " broker.log | tail -1)
echo "total: input_packets = sent: $([ "$(field "$total" input_packets)" = "$sent" ] && echo yes || echo no), clients $(field "$total" clients), open $(field "$total" open)"
echo "fast clients' peak queue (bytes):" $(for a in $(grep -F " connected" broker.log | sed 's/.* client \([^ ]*\) connected$/\1/' | tail -4); do field "$(counters_of broker.log "$a")" peak_queued_bytes; done) >peaks
