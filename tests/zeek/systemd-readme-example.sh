# The zeek.conf example for Zeek's systemd generator in docs/clusters.md
# (once the README's), read from that file itself, works with the generator of the Zeek under test (the
# suite runs on 8.0, 8.2 and 9.0: 8.0 has no generator and skips this test).
# 9.0's generator starts a manager, a logger and a proxy only when zeek.conf
# asks for them (manager = 1, loggers = 1, proxies = 1); 8.1 and 8.2 always
# do, know loggers and proxies, and warn that they ignore `manager`, once
# (the one warning this test allows). Then: the units zeek.target wants are
# the archiver, setup, manager, one logger, one proxy and four workers; each
# worker gets its own share; the manager, logger and proxy get no interface.
# @TEST-REQUIRES: test -x "$(zeek-config --prefix)/bin/zeek-systemd-generator"
# @TEST-REQUIRES: command -v python3
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

prefix=$(zeek-config --prefix)
# The ini block that follows the line naming zeek-systemd-generator.
awk '/^# zeek.conf of zeek-systemd-generator/ { on = 1 } on && /^```/ { exit } on' "$PROJECT/docs/clusters.md" >zeek.conf
echo "--- README's zeek.conf"
cat zeek.conf
mkdir units
"$prefix/bin/zeek-systemd-generator" --config "$PWD/zeek.conf" units >gen.out 2>gen.err
echo "--- zeek-systemd-generator: exit status $?"
cat gen.out
grep -vxF "ignoring unknown key 'manager' from line 'manager = 1'" gen.err
echo "--- zeek.target wants"
ls units/zeek.target.wants | sort
echo "--- as systemd runs them"
for unit in zeek-manager.service zeek-logger@1.service zeek-proxy@1.service \
    zeek-worker@1.service zeek-worker@2.service zeek-worker@3.service zeek-worker@4.service; do
    run-unit --print units "$unit" >"$unit.print" || echo "$unit: run-unit failed"
    unit-node "$unit.print" "$unit"
done
