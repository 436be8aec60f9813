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
. "$SCRIPTS/zkg.sh"
git clone -q "$PROJECT" zeek-pcapovertcp
zkg_config
# As from a user's shell: not this btest run's plugin path, nor its btest
# settings (zkg's test_command runs btest again, in the clone).
user_env PCAPOVERTCP_BUILD PCAPOVERTCP_BTEST_TMPDIR
zkg_install "$PWD/zeek-pcapovertcp" "${clean_env[@]}"
ZEEK_PLUGIN_PATH=$PWD/state/plugin_dir timeout 60 zeek -N Zeek::PcapOverTcp | sed -e 's/version [0-9.]*/version X/'
test -x state/bin/pcapovertcp-serve && echo "pcapovertcp-serve installed"
