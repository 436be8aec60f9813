# `make dist` gives a tarball that installs on a machine with no network at
# all (README, "Offline install"): unpacked in a fresh directory, it is built
# with no network interface but loopback (`unshare -n`, a network namespace
# of its own) and an empty CARGO_HOME (no crate cache), both ways the README
# gives: ./configure && make && make install (into a directory of the
# test's), and zkg install of the unpacked directory, which runs the
# package's tests (the `installed` group; they need loopback) before it
# installs. Zeek then loads each build. The tarball is of the committed HEAD.
# Skipped, never passed, where a network namespace cannot be made. Each way
# has an hour (zkg builds twice): one build took 28 minutes on a 2-core
# machine at a load of 22.
# @TEST-REQUIRES: command -v unshare && unshare -n sh -c 'ip link set lo up'
# @TEST-REQUIRES: command -v git && command -v zkg && command -v cargo
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

set -e
. "$SCRIPTS/zkg.sh"
work=$PWD
mkdir dist unpacked cargo-home root
make -s -C "$PROJECT" dist DIST_DIR="$PWD/dist" >make-dist.log 2>&1 || { cat make-dist.log; exit 1; }
tarball=$(ls dist/)
echo "tarball: ${tarball/[0-9]*.[0-9]*.[0-9]*.tar.gz/VERSION.tar.gz}"
tar xzf "dist/$tarball" -C unpacked
tree=$PWD/unpacked/${tarball%.tar.gz}
test -f "$tree/.cargo/config.toml" && test -d "$tree/vendor" && echo "vendored crates and .cargo/config.toml"
git -C "$tree" status --porcelain | head -5
echo "a git repository with $(git -C "$tree" rev-list --count HEAD) commit, nothing uncommitted"

# offline CMD...: CMD in a network namespace with loopback alone, an empty
# CARGO_HOME and none of this btest run's settings (as from a user's shell).
user_env
clean_env+=(CARGO_HOME="$work/cargo-home")
offline() {
    unshare -n sh -c 'ip link set lo up && exec "$@"' offline "${clean_env[@]}" "$@"
}
offline sh -c 'ip -o link show | cut -d: -f2 | tr -d " " | tr "\n" " "; echo' | sed 's/^/interfaces in the namespace: /'

echo "--- ./configure && make && make install"
if ! (cd "$tree" && offline timeout 3600 sh -c "./configure --install-root='$work/root' --bindir='$work/root/bin' && make && make install") \
    >build.log 2>&1; then
    echo "the offline build failed (or took over an hour):"
    tail -40 build.log
    exit 1
fi
ls cargo-home | sed 's/^/CARGO_HOME has: /'
ZEEK_PLUGIN_PATH=$PWD/root timeout 60 zeek -NN Zeek::PcapOverTcp | sed -e 's/version [0-9.]*/version X/' | grep -E '^Zeek::PcapOverTcp|\[Packet Source\]'
test -x root/bin/pcapovertcp-serve && echo "pcapovertcp-serve installed"

echo "--- zkg install of the unpacked directory"
zkg_config
zkg_install "$tree" offline
ZEEK_PLUGIN_PATH=$PWD/state/plugin_dir timeout 60 zeek -NN Zeek::PcapOverTcp | sed -e 's/version [0-9.]*/version X/' | grep -E '^Zeek::PcapOverTcp|\[Packet Source\]'
test -x state/bin/pcapovertcp-serve && echo "pcapovertcp-serve installed"
ls cargo-home | sed 's/^/CARGO_HOME has: /'
