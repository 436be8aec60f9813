# The plugin, its packet source and its options, as `zeek -NN` shows them.
# @TEST-GROUP: installed
# @TEST-EXEC: zeek -NN Zeek::PcapOverTcp | sed -e 's/version [0-9.]*/version X/' >output
# @TEST-EXEC: btest-diff output
