# Helpers for the btests that stop and restart a socat server under a
# running Zeek; sourced (after lib.sh). They use $port.

# count_packets TRACE: how many packets Zeek reads from TRACE.
count_packets() {
    zeek -r "$1" -b -e 'event zeek_done() { print get_net_stats()$pkts_recvd; }'
}

# start_socat FILE: a server on $port; each connection gets FILE, then the
# server keeps it open and idle. socat runs in a process group of its own
# (setsid), which stop_socat ends at once: killing its children first let
# the still listening socat accept Zeek's reconnect (and fork a server of
# the old file for it) before it died, so Zeek read the first file twice
# or connected once more.
start_socat() {
    setsid socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" SYSTEM:"cat $1; sleep 60" >/dev/null 2>&1 &
    socat_pid=$!
    wait-listen "$port" 10
}

stop_socat() {
    kill -TERM -- "-$socat_pid" 2>/dev/null
    wait "$socat_pid" 2>/dev/null || true # its status is that of SIGTERM
}

# wait_socat_forked: until socat has forked for a connection (10 s at
# most), and half a second more.
wait_socat_forked() {
    for _ in $(seq 500); do pgrep -P "$socat_pid" >/dev/null && break; sleep 0.02; done
    sleep 0.5
}

# until_records_script N FORMAT ARGS: Zeek script that ends Zeek once it has
# connected twice and N records have arrived (both streams), printing
# fmt(FORMAT, ARGS) first; ARGS may name the stats as s.
until_records_script() {
    cat <<ZEEK
# Ends Zeek once the packets of both streams have arrived.
event check()
	{
	local s = PcapOverTcp::stats();
	if ( s\$connects >= 2 && s\$records >= $1 )
		{
		print fmt("$2", $3);
		terminate();
		return;
		}
	schedule 50 msec { check() };
	}
event zeek_init() { schedule 50 msec { check() }; }
ZEEK
}

# start_zeek_watch [ZEEK_OPTIONS...]: in the background, in ./live (60 s at
# most), zeek -i pcapovertcp::127.0.0.1:$port with ./watch.zeek,
# reconnecting every 50 to 500 ms; sets $zeek to its pid.
start_zeek_watch() {
    (mkdir live && cd live && timeout 60 zeek "$@" -i "pcapovertcp::127.0.0.1:$port" ../watch.zeek \
        PcapOverTcp::reconnect_min=50msec PcapOverTcp::reconnect_max=500msec >stdout 2>stderr) &
    zeek=$!
}
