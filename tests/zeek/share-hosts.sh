# Shares across hosts (?share=I+K/N): two hosts with two workers each read
# one stream, host a taking shares 0-1 of 4 and host b shares 2-3, each
# host's configuration for Zeek's systemd generator naming only its own
# offset K and letting the generator fill in the worker index I. With Zeek
# 9.0's generator: the multi-host layout (etc/cluster/HOST.zeek.conf, an
# [interface] section, `${host_worker_index0}+K/4`); with 8.2's, which has
# neither sections nor ${host_worker_index0}: one section-less zeek.conf
# per host with `${worker_index0}+K/4`. The -i argument of each generated
# worker unit (run-unit applies systemd's rules) is then read by a real
# worker, all four on one pcapovertcp-serve stream (--wait-clients 4):
# share-compare checks that together they equal `zeek -r` of the trace,
# each connection on exactly one worker, every packet kept once.
# @TEST-REQUIRES: test -x "$(zeek-config --prefix)/bin/zeek-systemd-generator"
# @TEST-REQUIRES: test -x "$SERVE" && test -f "$TRACES/tunnels/Teredo.pcap"
# @TEST-REQUIRES: command -v capinfos && command -v python3 && command -v timeout
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
trap 'kill $pids 2>/dev/null' EXIT
pids=
generator=$(zeek-config --prefix)/bin/zeek-systemd-generator
trace=$TRACES/tunnels/Teredo.pcap
packets=$(capinfos -c -M -T -r "$trace" | cut -f2)
zeek_offline "$trace" offline

pf=$PWD/serve.port
timeout 100 "$SERVE" --listen 127.0.0.1:0 --port-file "$pf" --clients 4 --wait-clients 4 "$trace" >/dev/null 2>serve.err &
spid=$!
pids="$pids $spid"
port=$(read_port_file "$pf") || echo "the server did not start"

# host_conf HOST K: HOST's configuration, in the style its generator reads.
host_conf() {
    if printf 'interface = x${host_worker_index0}\nworkers = 1\n' >probe.conf && mkdir -p probe &&
        "$generator" --config "$PWD/probe.conf" probe >/dev/null 2>&1; then
        echo "multi-host: etc/cluster/$1.zeek.conf, \${host_worker_index0}" >>style
        mkdir -p etc/cluster
        printf '[interface feed]\ninterface = pcapovertcp::127.0.0.1:%s?share=${host_worker_index0}+%s/4\nworkers = 2\n' \
            "$port" "$2" >"etc/cluster/$1.zeek.conf"
        echo "etc/cluster/$1.zeek.conf"
    else
        echo "section-less: $1.zeek.conf, \${worker_index0}" >>style
        printf 'interface = pcapovertcp::127.0.0.1:%s?share=${worker_index0}+%s/4\nworkers = 2\n' \
            "$port" "$2" >"$1.zeek.conf"
        echo "$1.zeek.conf"
    fi
}

n=0
for host in a:0 b:2; do
    name=${host%:*}
    conf=$(host_conf "$name" "${host#*:}")
    mkdir "units-$name"
    "$generator" --config "$PWD/$conf" "units-$name" || echo "zeek-systemd-generator failed for host $name"
    for k in 1 2; do
        unit=$(cd "units-$name" && ls -d zeek-worker*@$k.service.d | sed 's/\.d$//')
        run-unit --print "units-$name" "$unit" >"$name-$k.print"
        iface=$(python3 - "$name-$k.print" <<'PY'
import ast, sys
line = next(l for l in open(sys.argv[1]) if l.startswith("ExecStart "))
argv = ast.literal_eval(line.split(" ", 1)[1])
print(argv[argv.index("-i") + 1])
PY
)
        echo "host $name worker $k: -i ${iface/:$port?/:PORT?}"
        mkdir -p "w/$n"
        (cd "w/$n" && exec timeout --foreground -k 5 60 zeek -i "$iface" allow_network_time_forward=F \
            PcapOverTcp::reconnect=F -e "$(share_stats_script)" >stdout 2>stderr) &
        eval "w$n=\$!"
        pids="$pids $!"
        n=$((n + 1))
    done
done
for i in 0 1 2 3; do
    eval "wait \$w$i" || echo "worker $i exited with status $?: $(tail -1 "w/$i/stderr")"
done
wait $spid || echo "the server exited with status $?"
share-compare "$packets" offline w/0 w/1 w/2 w/3 && echo "the four workers together: as zeek -r, each connection once"
for i in 0 1 2 3; do
    echo "worker $i: $(grep -o 'records [0-9]* other_share [0-9]*' "w/$i/stdout")"
done
