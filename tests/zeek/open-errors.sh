# Each way of failing to open the source is one clear fatal error that names
# the endpoint, and Zeek exits with status 1. (The source opens at once, so
# Zeek's own "listening on" line comes first where the endpoint is valid;
# it is left out here.)
# @TEST-REQUIRES: command -v nc
# @TEST-EXEC: bash %INPUT >output 2>&1
# @TEST-EXEC: btest-diff output

. "$SCRIPTS/lib.sh"
try() {
    timeout 30 zeek -i "pcapovertcp::$1" PcapOverTcp::reconnect=F >/dev/null 2>err
    # The resolver's own wording varies; the line around it does not.
    echo "status $?: $(sed -e "s/$2/PORT/g" -e "s/information: [^;]*;/information: ...;/" err | without_zeek_open_lines)"
}
port=$(free-port)
try "127.0.0.1:$port" "$port"                  # nothing listens
try "127.0.0.1" X                               # no port
try "127.0.0.1:0" X                             # port 0
try "[::1:57012" X                              # unbalanced bracket
try "no-such-host.invalid:57012" X              # DNS failure
printf 'SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n' >banner
nc -N -l 127.0.0.1 "$port" <banner >/dev/null 2>&1 &
wait-listen "$port" 10
try "127.0.0.1:$port" "$port"                   # not PCAP-over-IP
# An interface name that is not UTF-8: an error line, not std::terminate.
try "$(printf '\xff\xfe'):57012" X 2>&1 | LC_ALL=C sed 's/[\x80-\xff]/?/g'
