# As systemd-generator.sh, but systemd itself reads the generated units:
# `systemd-analyze --user verify` (no systemd running needed) loads
# zeek-worker@K.service from the template and its drop-in, and its debug
# dump of the unit shows the environment and command line systemd would
# start worker K with: INTERFACE=pcapovertcp::127.0.0.1:57012?share=K-1/4,
# CLUSTER_NODE=worker-K and `zeek -i "${INTERFACE}"` (quoted: one argument).
# verify itself must report no problem with the units. It runs as a user
# manager (--user) with a private XDG_RUNTIME_DIR: as the system manager it
# would touch /run/systemd; unit files are parsed the same way. zeek.conf
# is docs/clusters.md's (manager, loggers and proxies included: see
# systemd-generator.sh), and the scripts on the command line are shown
# sorted (their order is the generator's).
# @TEST-REQUIRES: test -x "$(zeek-config --prefix)/bin/zeek-systemd-generator"
# @TEST-REQUIRES: command -v systemd-analyze && command -v timeout
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
prefix=$(zeek-config --prefix)
mkdir -m 700 xdg
export XDG_RUNTIME_DIR=$PWD/xdg
generate_share_units "$prefix/bin/zeek-systemd-generator"
for k in 1 2 3 4; do
    unit=zeek-worker@$k.service
    # At its default log level, verify prints only problems.
    timeout 60 systemd-analyze --user verify --man=no --generators=no "units/$unit" >"verify-$k.out" 2>&1
    echo "$unit: verify exit status $?, $([ -s "verify-$k.out" ] && echo "says:" || echo "no problems")"
    sed "s#$PWD/##g" "verify-$k.out"
    SYSTEMD_LOG_LEVEL=debug timeout 60 systemd-analyze --user verify --man=no --generators=no "units/$unit" \
        >"verify-$k.dump" 2>"verify-$k.log"
    # The unit's own section of the dump.
    awk -v u="-> Unit $unit:" 'index($0, u) { on = 1; next } /-> Unit / { on = 0 } on' "verify-$k.dump" |
        grep -E '^\s+(Environment: (CLUSTER_NODE|INTERFACE)=|Command Line: )' | sed -e 's/^\s*/    /' -e "s#$prefix#PREFIX#g" | sort_zeek_scripts
done
