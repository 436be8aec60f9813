# A plugin built for another Zeek release (patch releases included) does not
# load, and Zeek says why and stops (docs/install.md, "After a Zeek upgrade"). The
# plugin refers to zeek_version_<VERSION>_plugin_<API>, which only the Zeek
# it was built against exports; a copy of the built plugin whose reference
# names another version stands for one built before an upgrade. Version,
# path and script location are canonicalised: the messages are Zeek's
# (src/plugin/Manager.cc) and the loader's.
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

set -e
tar xzf "$ZEEK_PLUGIN_PATH/Zeek_PcapOverTcp.tgz"
so=$(ls Zeek_PcapOverTcp/lib/*.so)
python3 - "$so" <<'PY'
import re, sys
path = sys.argv[1]
data = open(path, "rb").read()
names = set(re.findall(rb"zeek_version_[0-9A-Za-z_]+?_plugin_[0-9]+", data))
assert len(names) == 1, names
name = names.pop()
# Another release's name of the same length: the patch level's last digit.
digits = [i for i, c in enumerate(name[: name.index(b"_plugin_")]) if chr(c).isdigit()]
i = digits[-1]
stale = name[:i] + (b"1" if name[i:i + 1] != b"1" else b"2") + name[i + 1:]
open(path, "wb").write(data.replace(name, stale))
print("the copy refers to another release's symbol:", stale != name)
PY
set +e
ZEEK_PLUGIN_PATH=$PWD timeout 60 zeek -NN Zeek::PcapOverTcp >stdout 2>stderr
echo "zeek -NN: status $?"
cat stdout
sed -e "s#$PWD/\\{0,1\\}Zeek_PcapOverTcp/*lib/[^:]*\\.so#PLUGIN.so#g" \
    -e 's/ in [^ ]*init-bare\.zeek, line [0-9]*:/ in init-bare.zeek:/' \
    -e 's/zeek_version_[0-9A-Za-z_]*_plugin_[0-9]*/zeek_version_OTHER_plugin_N/' stderr
