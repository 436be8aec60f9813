# `zkg install` of a fresh clone into a temporary zkg state builds the
# plugin (Rust core included); Zeek then finds it, and the replay tool is
# linked into zkg's bin directory.
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

set -e
git clone -q "$PROJECT" clone
cat >zkg.cfg <<CFG
[sources]
[paths]
state_dir = $PWD/state
script_dir = $PWD/state/script_dir
plugin_dir = $PWD/state/plugin_dir
bin_dir = $PWD/state/bin
CFG
timeout 900 zkg --configfile zkg.cfg install --force --skiptests "$PWD/clone" >zkg.log 2>&1 || { cat zkg.log; exit 1; }
ZEEK_PLUGIN_PATH=$PWD/state/plugin_dir zeek -N Zeek::PcapOverTcp | sed -e 's/version [0-9.]*/version X/'
test -x state/bin/pcapovertcp-serve && echo "pcapovertcp-serve installed"
