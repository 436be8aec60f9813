# Helpers for the btests that install the package with zkg; sourced.

# user_env [NAME...]: sets the array clean_env to an `env` command that
# leaves out this btest run's settings and the NAMEs (as from a user's
# shell).
user_env() {
    local var
    clean_env=(env -u ZEEK_PLUGIN_PATH -u ZEEKPATH -u ZEEK_PLUGIN_ACTIVATE -u TRACES -u SERVE -u SCRIPTS -u PROJECT)
    for var in "$@" $(env | sed -n 's/^\(TEST_[A-Z_]*\)=.*/\1/p'); do clean_env+=(-u "$var"); done
}

# zkg_config: a zkg.cfg here whose state, scripts, plugins and binaries
# all go below ./state.
zkg_config() {
    cat >zkg.cfg <<CFG
[sources]
[paths]
state_dir = $PWD/state
script_dir = $PWD/state/script_dir
plugin_dir = $PWD/state/plugin_dir
bin_dir = $PWD/state/bin
CFG
}

# zkg_install TREE [WRAPPER...]: zkg install of TREE (an hour at most),
# run through WRAPPER; on failure prints zkg's log and its tests' output
# and exits 1. Then prints the btest summary of the package's tests.
zkg_install() {
    local tree=$1 f tests_out
    shift
    if ! "$@" timeout 3600 zkg --configfile zkg.cfg install --force "$tree" >zkg.log 2>&1; then
        echo "zkg install failed (or took over an hour):"
        cat zkg.log
        for f in state/testing/*/clones/*/zkg.test_command.std*; do
            [ -f "$f" ] && { echo "--- $f"; tail -50 "$f"; }
        done
        exit 1
    fi
    # What zkg's test_command printed last: the installed group ran and
    # passed.
    tests_out=$(ls state/testing/*/clones/*/zkg.test_command.stdout)
    grep '^btest: ' "$tests_out" | sed -E 's/^btest: [1-9][0-9]* passed/btest: N passed/'
}
