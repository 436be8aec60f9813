##! Options of the PCAP-over-IP packet source (``-i pcapovertcp::HOST:PORT``).
##! Each is a ``&redef`` constant, read when the source opens; redefine it in
##! local.zeek, on the command line (``PcapOverTcp::buffer_size=...``), or per
##! zeekctl worker with ``pcapovertcp_<option>=`` in node.cfg.

module PcapOverTcp;

export {
	## Bytes of packet data (records and their headers, as received) that
	## may wait between the reader thread and Zeek. When the buffer is full
	## the reader stops reading the socket, so TCP slows the sender down and
	## nothing is lost. Memory use is this plus about 2 MiB per source.
	const buffer_size = 128 * 1024 * 1024 &redef;

	## The largest captured length a record may claim. A larger one means the
	## stream is corrupt (or not pcap at all): the source reports it and ends
	## instead of waiting for, or allocating, that many bytes. pcapng blocks
	## may be up to this plus 64 KiB.
	const max_caplen = 262144 &redef;
}
