# Zeek's systemd generator (zeek-systemd-generator, Zeek >= 8.1) with
# `interface = pcapovertcp::HOST:PORT?share=${worker_index0}/4`, 4
# workers, and manager = 1, loggers = 1, proxies = 1 as in docs/clusters.md (9.0's
# generator starts no manager, logger or proxy without them, and its workers
# then stop at start-up: "No ZeroMQ connect_log_endpoints configured"; 8.2's
# warns once that it ignores `manager`, which is all it may say): the drop-in of zeek-worker@K.service sets INTERFACE to
# ...?share=K-1/4, and the worker template's ExecStart passes ${INTERFACE}
# to `zeek -i` as one argument (run-unit applies systemd's rules to the
# generated files; systemd-generator-analyze.sh has systemd itself read
# them). Then a deployment of its own (base_dir in the test directory) is
# set up by the generated zeek-setup.service (its mkdir and layout commands;
# not chown: there is no zeek user here) and its four workers are started
# from their units for real against one pcapovertcp-serve --wait-clients 4:
# each reports its own share, and their Prometheus endpoints (ports from the
# generated cluster layout) show shares that are disjoint and together the
# whole trace. The manager, logger and proxy are not started: their ZeroMQ
# ports are fixed (5555, 5556), and the shares are read from the workers
# themselves. The scripts on the workers' command line are shown sorted:
# their order is the generator's (9.0 loads the cluster backend first).
# @TEST-REQUIRES: test -x "$(zeek-config --prefix)/bin/zeek-systemd-generator"
# @TEST-REQUIRES: test -x "$SERVE" && test -f "$TRACES/tunnels/Teredo.pcap"
# @TEST-REQUIRES: command -v curl && command -v python3 && command -v capinfos && command -v timeout
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
t0=$(date +%s.%N)
prefix=$(zeek-config --prefix)
generator=$prefix/bin/zeek-systemd-generator
kill_pids_at_exit

echo "=== generated units"
generate_share_units "$generator"
for k in 1 2 3 4; do
    echo "zeek-worker@$k.service.d: $(grep '^Environment=' "units/zeek-worker@$k.service.d/10-zeek-systemd-generator.conf")"
done
grep '^ExecStart=' units/zeek-worker@.service | sed "s#$prefix#PREFIX#g" | sort_zeek_scripts
echo "--- as systemd runs them"
for k in 1 2 3 4; do
    run-unit --print units "zeek-worker@$k.service" >"worker-$k.print"
    echo "zeek-worker@$k.service: $(grep -E '^Environment (CLUSTER_NODE|INTERFACE)=' "worker-$k.print" | cut -d' ' -f2 | paste -sd' ')"
    # The argument after -i, exactly.
    python3 - "worker-$k.print" "$k" <<'PY'
import ast, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("ExecStart "))
argv = ast.literal_eval(line.split(" ", 1)[1])
k = int(sys.argv[2])
want = f"pcapovertcp::127.0.0.1:57012?share={k - 1}/4"
got = argv[argv.index("-i") + 1]
print(f"    -i {got!r}: {'as expected' if got == want else 'EXPECTED ' + repr(want)}; then {sorted(argv[argv.index('-i') + 2:])}")
PY
done

echo "=== the four workers run from their units"
trace=$TRACES/tunnels/Teredo.pcap
packets=$(capinfos -c -M "$trace" | awk '/Number of packets/ {print $NF}')
pf=$PWD/serve.port
"$SERVE" --listen 127.0.0.1:0 --port-file "$pf" --wait-clients 4 --clients 4 "$trace" >serve.out 2>&1 &
pids="$pids $!"
port=$(read_port_file "$pf")
# A Zeek installation of our own: bin and share are the real ones.
mkdir -p deploy/base
ln -s "$prefix/bin" deploy/base/bin
ln -s "$prefix/share" deploy/base/share
cat >deploy/zeek.conf <<CFG
interface = pcapovertcp::127.0.0.1:$port?share=\${worker_index0}/4
workers = 4
manager = 1
loggers = 1
proxies = 1
base_dir = $PWD/deploy/base
port = $(free_port_block 3)
metrics_port = $(free_port_block 7)
archiver = 0
CFG
mkdir deploy/units
"$generator" --config "$PWD/deploy/zeek.conf" deploy/units 2>deploy/gen.err || echo "zeek-systemd-generator failed"
grep -vxF "ignoring unknown key 'manager' from line 'manager = 1'" deploy/gen.err
run-unit --skip chown deploy/units zeek-setup.service || echo "zeek-setup.service failed"
spool=deploy/base/var/spool/zeek
for k in 1 2 3 4; do
    # timeout --foreground: see zeek_bg in metrics.sh.
    timeout --foreground -k 5 120 run-unit deploy/units "zeek-worker@$k.service" >"worker-$k.out" 2>"worker-$k.err" &
    pids="$pids $!"
    echo "$!" >"worker-$k.pid"
done

# scrape_worker K: worker K's metrics (its port from the generated layout)
# into worker-K.metrics.
scrape_worker() {
    local mp
    mp=$(grep "\"worker-$1\"" "$spool/generated-scripts/cluster-layout.zeek" | grep -o 'metrics_port=[0-9]*' | cut -d= -f2)
    curl -s --max-time 5 "http://127.0.0.1:$mp/metrics" >"worker-$1.tmp" && mv "worker-$1.tmp" "worker-$1.metrics"
}

# value K NAME: metric NAME of worker K.
value() {
    grep -E "^$2(\\{| )" "worker-$1.metrics" 2>/dev/null | head -1 | awk '{print $NF}'
}

# A worker is done once its stream has ended (the server closed it: one
# outage) and Zeek has dispatched every record the worker kept.
for k in 1 2 3 4; do
    done=
    for _ in $(seq 600); do
        scrape_worker "$k"
        if [ "$(value "$k" zeek_pcapovertcp_outages_total)" = 1 ] &&
            [ -n "$(value "$k" zeek_pcapovertcp_records_total)" ] &&
            [ "$(value "$k" zeek_net_received_packets_total)" = "$(value "$k" zeek_pcapovertcp_records_total)" ]; then
            done=1
            break
        fi
        sleep 0.1
    done
    [ -n "$done" ] || echo "worker-$k: stream not consumed within 60 s"
done
total=0
for k in 1 2 3 4; do
    records=$(value "$k" zeek_pcapovertcp_records_total)
    other=$(value "$k" zeek_pcapovertcp_other_share_total)
    echo "worker-$k: $(grep -m1 -o 'listening on .*' "worker-$k.err" | sed "s/:$port?/:PORT?/");" \
        "records $records + other_share $other $([ $((records + other)) = "$packets" ] && echo "= $packets" || echo "!= $packets")"
    total=$((total + records))
done
echo "records of the four workers: $total of $packets packets"
for k in 1 2 3 4; do
    kill -TERM "$(cat "worker-$k.pid")" 2>/dev/null
done
for k in 1 2 3 4; do
    wait "$(cat "worker-$k.pid")" 2>/dev/null
done
echo "took $(elapsed_since "$t0") s" >timing
