# One version everywhere: VERSION (2.0.0: it must sort above 1.0.12, the
# version of the C++ zeek-pcapovertcp-plugin this one replaces) equals
# Cargo.toml's and Cargo.lock's, and is the version `zeek -N` shows for the
# built plugin. The plugin tarball that zkg and zeekctl install
# (build/Zeek_PcapOverTcp.tgz) carries VERSION, COPYING and docs/ (the pages
# the README links to), and the plugin unpacked from it alone shows that same
# version.
# @TEST-GROUP: installed
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

same() { # same WHAT VALUE EXPECTED
    if [ "$2" = "$3" ]; then echo "$1: yes"; else echo "$1: no ('$2', expected '$3')"; fi
}
shown() { # the version in `zeek -N Zeek::PcapOverTcp`'s line
    timeout 60 zeek -N Zeek::PcapOverTcp 2>&1 | sed -n 's/^Zeek::PcapOverTcp - .*(dynamic, version \([^)]*\))$/\1/p'
}

version=$(cat "$PROJECT/VERSION")
echo "VERSION is MAJOR.MINOR.PATCH: $(echo "$version" | grep -Eqx '[0-9]+\.[0-9]+\.[0-9]+' && echo yes || echo "no ('$version')")"
echo "VERSION sorts above 1.0.12: $([ "$(printf '1.0.12\n%s\n' "$version" | sort -V | tail -1)" = "$version" ] && [ "$version" != 1.0.12 ] && echo yes || echo "no ('$version')")"
same "Cargo.toml's version is VERSION" "$(sed -n 's/^version = "\(.*\)"$/\1/p' "$PROJECT/Cargo.toml" | head -1)" "$version"
same "Cargo.lock's version is VERSION" \
    "$(awk '/^name = "zeek-pcapovertcp"$/ { getline; gsub(/^version = "|"$/, ""); print }' "$PROJECT/Cargo.lock")" "$version"
same "zeek -N shows VERSION" "$(shown)" "$version"

tarball=$PCAPOVERTCP_BUILD/Zeek_PcapOverTcp.tgz
echo "--- $(basename "$tarball") holds"
# The plugin's marker, its library, and the files DIST_FILES adds.
tar tzf "$tarball" | grep -E '^Zeek_PcapOverTcp/(__zeek_plugin__|__bro_plugin__|VERSION|COPYING|README.md|lib/[^/]+\.so|zeekctl/pcapovertcp\.py)$' |
    sed 's#/lib/.*\.so$#/lib/PLUGIN.so#' | sort
mkdir unpacked
tar xzf "$tarball" -C unpacked
same "its VERSION is VERSION" "$(cat unpacked/Zeek_PcapOverTcp/VERSION)" "$version"
same "its COPYING is COPYING" "$(cmp -s unpacked/Zeek_PcapOverTcp/COPYING "$PROJECT/COPYING" && echo same)" same
same "its docs/ is docs/" "$(diff -r unpacked/Zeek_PcapOverTcp/docs "$PROJECT/docs" >/dev/null && echo same)" same
same "zeek -N with only the unpacked tarball shows VERSION" "$(ZEEK_PLUGIN_PATH=$PWD/unpacked shown)" "$version"
