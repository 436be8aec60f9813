##! Options of the PCAP-over-IP packet source (``-i pcapovertcp::HOST:PORT``).
##! Each is a ``&redef`` constant, read when the source opens; redefine it in
##! local.zeek, on the command line (``PcapOverTcp::buffer_size=...``), or per
##! zeekctl worker with ``pcapovertcp_<option>=`` in node.cfg.

module PcapOverTcp;

export {
	## Bytes of packet data (records and their headers, as received) that
	## may wait between the reader thread and Zeek. When the buffer is full
	## the reader stops reading the socket, so TCP slows the sender down and
	## nothing is lost (unless :zeek:see:`PcapOverTcp::drop_when_full`).
	## Memory use is this plus about 2 MiB per source.
	const buffer_size = 128 * 1024 * 1024 &redef;

	## The largest captured length a record may claim. A larger one means the
	## stream is corrupt (or not pcap at all): the source reports it instead
	## of waiting for, or allocating, that many bytes. pcapng blocks may be up
	## to this plus 64 KiB.
	const max_caplen = 262144 &redef;

	## When the connection ends, fails or the stream turns corrupt, connect
	## again (with exponential backoff) and carry on with the new stream.
	## Each outage is reported once when it starts and once when it ends.
	## With F, the end of the stream ends the source, as the end of a trace
	## file does with ``zeek -r``.
	const reconnect = T &redef;

	## The first pause between connection attempts; it doubles with each
	## failed attempt up to :zeek:see:`PcapOverTcp::reconnect_max`.
	const reconnect_min = 100 msec &redef;

	## The longest pause between connection attempts.
	const reconnect_max = 30 sec &redef;

	## With :zeek:see:`PcapOverTcp::reconnect`, how long Zeek waits at
	## start-up for a first stream before it gives up (so that zeekctl can
	## start workers before their feed). 0 waits for ever.
	const open_timeout = 0 sec &redef;

	## When the buffer is full, keep reading the socket and drop whole
	## packets (counted as dropped in Zeek's packet statistics, so capture
	## loss sees them) instead of slowing the sender down. For a server that
	## feeds several sensors, where one slow Zeek must not stall the others.
	const drop_when_full = F &redef;
}
