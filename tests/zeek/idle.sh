# With the stream open and no traffic for 10 s, Zeek sleeps: under 1% CPU,
# its timers still fire (a scheduled event), and SIGTERM ends it within a
# second.
# @TEST-REQUIRES: test -d "$TRACES"
# @TEST-REQUIRES: command -v nc
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
head -c 24 "$TRACES/dns53.pcap" >header.pcap
port=$(free-port)
(cat header.pcap; sleep 60) | nc -N -l 127.0.0.1 "$port" >/dev/null 2>&1 &
server=$!
wait-listen "$port" 10
# zeek_init writes ./initialized: the CPU is measured from then on, not
# during the start-up (which a fixed sleep did not always cover on a busy
# machine: 1.0-1.5 % measured at load 20).
cat >tick.zeek <<'ZEEK'
event tick() { print "scheduled event fired"; }
event zeek_init()
    {
    schedule 2 sec { tick() };
    local f = open("initialized");
    print f, "yes";
    close(f);
    }
ZEEK
ZEEK_PLUGIN_ACTIVATE=Zeek::PcapOverTcp zeek -b -i "pcapovertcp::127.0.0.1:$port" "$PWD/tick.zeek" >stdout 2>stderr &
zeek=$!
wait_for_line initialized yes 60 || echo "zeek_init did not run within 60 s"
ticks() { awk '{print $14 + $15}' "/proc/$zeek/stat"; }
before=$(ticks)
sleep 10
after=$(ticks)
hz=$(getconf CLK_TCK)
# CPU percent over the 10 s window, from clock ticks.
echo "idle CPU under 1%: $(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN { print (100 * t / hz / 10 < 1) ? "yes" : "no (" 100 * t / hz / 10 "%)" }')"
kill -TERM "$zeek"
if wait_gone "$zeek" 1; then
    echo "ended within 1 s of SIGTERM"
else
    echo "still running 1 s after SIGTERM"
    kill -KILL "$zeek"
fi
grep "scheduled event" stdout
kill "$server" 2>/dev/null || true
