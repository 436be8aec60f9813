# `zkg install` of a fresh clone into a temporary zkg state, tests included
# (no --skiptests), as a user runs it: zkg builds the plugin (Rust core
# included) in a clone of its own, runs zkg.meta's test_command there — the
# `installed` group, which needs nothing beside the repository (that clone
# has no ../shared/traces beside it) — and installs only if those tests
# pass. Zeek then finds the plugin, and the replay tool is linked into zkg's
# bin directory. The clone is of the committed HEAD. zkg builds twice (to
# test, then to install): 20 minutes were not enough at a load of 22.
# @TEST-REQUIRES: command -v zkg
# @TEST-REQUIRES: command -v git
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

set -e
git clone -q "$PROJECT" zeek-pcapovertcp
cat >zkg.cfg <<CFG
[sources]
[paths]
state_dir = $PWD/state
script_dir = $PWD/state/script_dir
plugin_dir = $PWD/state/plugin_dir
bin_dir = $PWD/state/bin
CFG
# As from a user's shell: not this btest run's plugin path, nor its btest
# settings (zkg's test_command runs btest again, in the clone).
clean_env=(env -u ZEEK_PLUGIN_PATH -u PCAPOVERTCP_BUILD -u PCAPOVERTCP_BTEST_TMPDIR -u ZEEKPATH -u ZEEK_PLUGIN_ACTIVATE -u TRACES -u SERVE -u SCRIPTS -u PROJECT)
for var in $(env | sed -n 's/^\(TEST_[A-Z_]*\)=.*/\1/p'); do clean_env+=(-u "$var"); done
if ! timeout 3600 "${clean_env[@]}" zkg --configfile zkg.cfg install --force "$PWD/zeek-pcapovertcp" >zkg.log 2>&1; then
    echo "zkg install failed (or took over an hour):"
    cat zkg.log
    for f in state/testing/*/clones/*/zkg.test_command.std*; do
        [ -f "$f" ] && { echo "--- $f"; tail -50 "$f"; }
    done
    exit 1
fi
# What zkg's test_command printed last: the installed group ran and passed.
tests_out=$(ls state/testing/*/clones/*/zkg.test_command.stdout)
grep '^btest: ' "$tests_out" | sed -E 's/^btest: [1-9][0-9]* passed/btest: N passed/'
ZEEK_PLUGIN_PATH=$PWD/state/plugin_dir timeout 60 zeek -N Zeek::PcapOverTcp | sed -e 's/version [0-9.]*/version X/'
test -x state/bin/pcapovertcp-serve && echo "pcapovertcp-serve installed"
