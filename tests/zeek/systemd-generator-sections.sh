# Zeek 9.0's systemd generator with the two 9.0 examples of docs/clusters.md,
# read from that file itself: (1) `[interface NAME]` sections, two streams each split
# between its own two workers: units zeek-worker-NAME@K, nodes
# worker-NAME-K, ${worker_index0} from 0 in each section; (2) one stream
# split among the workers of two hosts with per-host files
# cluster/<host>.zeek.conf (sensor-b's is sensor-a's with shares 2 and 3,
# plus a manager host): each host's units read only its own shares, node
# names carry the host's name, and the cluster layout (built from the whole
# directory, as zeek-setup.service does) has the four workers, each once.
# Before 9.0 the generator knows no sections: skipped there.
# @TEST-REQUIRES: test -x "$(zeek-config --prefix)/bin/zeek-systemd-generator"
# @TEST-REQUIRES: test "$(zeek-config --version | cut -d. -f1)" -ge 9
# @TEST-REQUIRES: command -v python3
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

prefix=$(zeek-config --prefix)
generator=$prefix/bin/zeek-systemd-generator

# readme_block FIRST-LINE: docs/clusters.md's code block that starts with that line.
readme_block() {
    awk -v first="$1" 'index($0, first) == 1 { on = 1 } on && /^```/ { exit } on' "$PROJECT/docs/clusters.md"
}

# show UNITDIR UNIT...: each unit's CLUSTER_NODE and interface as systemd
# would start it.
show() {
    local dir=$1 unit
    shift
    for unit in "$@"; do
        run-unit --print "$dir" "$unit" >"$dir.$unit.print" || echo "$unit: run-unit failed"
        unit-node "$dir.$unit.print" "    $unit"
    done
}

# wanted UNITDIR: the units zeek.target wants, on one line.
wanted() {
    ls "$1/zeek.target.wants" | sort | paste -sd' '
}

echo "=== (1) sections"
readme_block "# zeek.conf for Zeek 9.0's generator" >zeek.conf
mkdir units
"$generator" --config "$PWD/zeek.conf" units || echo "zeek-systemd-generator failed"
echo "wanted: $(wanted units)"
show units zeek-worker-tap-a@1.service zeek-worker-tap-a@2.service \
    zeek-worker-tap-b@1.service zeek-worker-tap-b@2.service zeek-manager.service

echo "=== (2) one stream, two hosts"
mkdir cluster
readme_block "# <PREFIX>/etc/zeek/cluster/sensor-a.zeek.conf" >cluster/sensor-a.zeek.conf
sed -e 's/share1\]/share3]/' -e 's/share=1\//share=3\//' -e 's/share0\]/share2]/' -e 's/share=0\//share=2\//' \
    -e 's/192\.0\.2\.21/192.0.2.22/' cluster/sensor-a.zeek.conf >cluster/sensor-b.zeek.conf
cat >cluster/c-mgr.zeek.conf <<'CFG'
[zeek]
manager = 1
loggers = 1
proxies = 1
cluster_address = 192.0.2.20
CFG
for host in sensor-a sensor-b; do
    mkdir "$host"
    "$generator" --config "$PWD/cluster/$host.zeek.conf" "$host" || echo "zeek-systemd-generator failed for $host"
    echo "$host wants: $(wanted "$host")"
    # shellcheck disable=SC2046 # unit names have no spaces
    show "$host" $(ls "$host/zeek.target.wants" | grep '^zeek-worker' | sort)
done
echo "--- the cluster layout's workers"
"$prefix/bin/zeek-cluster-layout-generator" -C "$PWD/cluster" -o layout.zeek || echo "zeek-cluster-layout-generator failed"
grep -o '\["[^"]*"\] = \[\$node_type=Cluster::WORKER, \$ip=hosts\["[^"]*"\]' layout.zeek | sort
