# pcapovertcp-serve --shards: one trace on standard input, split by the
# plugin's flow hash over two ports (share k on PORT+k), each read by its
# own plain `zeek -i pcapovertcp::127.0.0.1:PORT+k` (no ?share: the broker
# does the sharing, each packet crosses the link once). Together the two
# workers match `zeek -r` of the trace: the same conn.log lines (without
# uids, as a multiset), each connection on one worker only, and the
# packets the workers read (PcapOverTcp::stats()) add up to the trace's,
# as do the broker's per-client counters, with nothing dropped.
# No shared trace has more than a couple of address pairs (Teredo's are
# inside tunnels), so the trace is eight Ethernet traces merged in time
# order (they do not overlap): 10 address pairs, 11 ports, 8317+ packets.
# @TEST-REQUIRES: test -x "$SERVE" && test -f "$TRACES/http/bro.org.pcap"
# @TEST-REQUIRES: command -v mergecap && command -v capinfos && command -v timeout && command -v python3
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
pids=
trap 'kill $pids 2>/dev/null' EXIT

trace=$PWD/merged.pcap
mergecap -F pcap -w "$trace" \
    "$TRACES/dns53.pcap" "$TRACES/ftp/cwd-navigation.pcap" "$TRACES/http/206_example_b.pcap" \
    "$TRACES/http/bro.org.pcap" "$TRACES/http/get-to-ssh-server.pcap" "$TRACES/smb/smb2.pcap" \
    "$TRACES/ipv6-fragmented-dns.pcap" \
    "$TRACES/smb/dssetup_DsRoleGetPrimaryDomainInformation_standalone_workstation.cap"
packets=$(capinfos -c -M -T -r "$trace" | cut -f2)
echo "trace: $packets packets"
zeek_offline "$trace" offline || echo "zeek -r failed: $(tail -1 offline/stderr)"

stats_script='
event zeek_done()
    {
    local s = PcapOverTcp::stats();
    print fmt("stats records %d dropped %d truncated %d", s$records, s$dropped, s$truncated);
    }'

# Not under timeout (its counters come at exit); wait_bounded bounds it.
cat "$trace" | "$SERVE" --listen 127.0.0.1:0 --port-file pf --shards 2 --wait-clients 2 - 2>broker.log &
spid=$!
pids="$pids $spid"
for _ in $(seq 500); do
    [ -f pf ] && [ "$(wc -l <pf)" = 2 ] && break
    sleep 0.02
done
echo "port file: $(cat pf 2>/dev/null | wc -l) lines"
p0=$(sed -n 1p pf)
p1=$(sed -n 2p pf)
echo "shard ports consecutive: $([ "$p1" = $((p0 + 1)) ] && echo yes || echo "no ($p0, $p1)")"

wpids=
for k in 0 1; do
    port=$(sed -n "$((k + 1))p" pf)
    mkdir -p "w$k"
    (cd "w$k" && zeek_bounded 60 -i "pcapovertcp::127.0.0.1:$port" allow_network_time_forward=F \
        PcapOverTcp::reconnect=F -e "$stats_script" >stdout 2>stderr) &
    wpids="$wpids $!"
done
pids="$pids $wpids"
k=0
for p in $wpids; do
    wait "$p" && echo "worker $k: exit status 0" || echo "worker $k: exit status $?: $(tail -1 "w$k/stderr")"
    k=$((k + 1))
done

wait_bounded "$spid" 30 && echo "broker: exit status 0" || echo "broker: exit status $?: $(tail -3 broker.log)"

python3 - "$packets" offline w0 w1 <<'PY'
import collections
import pathlib
import re
import sys


def rows(d):
    path, fields, out = pathlib.Path(d) / "conn.log", None, []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.startswith("#fields\t"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            out.append(dict(zip(fields, line.split("\t"))))
    return out


def line(r):
    return "\t".join(f"{k}={v}" for k, v in r.items() if k != "uid")


def key(r):
    return " ".join(r[k] for k in ("ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto"))


packets, offline, workers = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
want = collections.Counter(line(r) for r in rows(offline))
got, where = collections.Counter(), collections.defaultdict(set)
for i, w in enumerate(workers):
    rs = rows(w)
    print(f"worker {i}: {len(rs)} connections, {len({(r['id.orig_h'], r['id.resp_h']) for r in rs})} address pairs")
    for r in rs:
        got[line(r)] += 1
        where[key(r)].add(i)
print(f"zeek -r: {sum(want.values())} connections")
if want == got:
    print("union of the workers' conn.log (without uid) = zeek -r's: yes")
else:
    print(f"union of the workers' conn.log (without uid) = zeek -r's: NO, "
          f"{sum((want - got).values())} missing, {sum((got - want).values())} extra")
    for l in sorted((want - got).elements())[:3]:
        print("  missing: " + l)
    for l in sorted((got - want).elements())[:3]:
        print("  extra:   " + l)
multi = [k for k, ws in where.items() if len(ws) > 1]
print(f"connections on more than one worker: {len(multi)}")
stats = []
for w in workers:
    m = re.search(r"stats records (\d+) dropped (\d+) truncated (\d+)", (pathlib.Path(w) / "stdout").read_text())
    stats.append(tuple(map(int, m.groups())) if m else None)
if None in stats:
    print("no stats line from a worker")
else:
    total = sum(s[0] for s in stats)
    print(f"packets read by the workers add up to the trace's: {'yes' if total == packets else f'NO ({total})'}")
    print(f"both workers read packets: {'yes' if all(s[0] for s in stats) else 'NO'}")
    print(f"dropped or truncated in the workers: {sum(s[1] + s[2] for s in stats)}")
PY

# The broker's counters at exit: one line per client (a shard each), then
# the total.
sum=0
dropped=0
for line in $(grep -F " counters: client=" broker.log | tr ' ' '|'); do
    line=$(echo "$line" | tr '|' ' ')
    sum=$((sum + $(field "$line" packets)))
    dropped=$((dropped + $(field "$line" dropped)))
done
total=$(grep -F " counters: total " broker.log | tail -1)
echo "broker: clients $(field "$total" clients), input_packets = trace: $([ "$(field "$total" input_packets)" = "$packets" ] && echo yes || echo no)"
echo "broker: packets sent to the two clients add up to the trace's: $([ "$sum" = "$packets" ] && echo yes || echo "NO ($sum)"), dropped $dropped"
