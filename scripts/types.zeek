##! Types of the PCAP-over-IP packet source; loaded before its built-in
##! functions, which use them.

module PcapOverTcp;

export {
	## What :zeek:see:`PcapOverTcp::stats` returns.
	type Stats: record {
		## Connections established to the server.
		connects: count;
		## Connections that ended (closed by the server, failed, or corrupt).
		disconnects: count;
		## Bytes read from the server.
		bytes: count;
		## Records (packets) parsed from the stream.
		records: count;
		## Records dropped because the buffer was full
		## (:zeek:see:`PcapOverTcp::drop_when_full`).
		dropped: count;
		## Records cut off by the end of a connection.
		truncated: count;
		## Connections whose stream was not valid pcap or pcapng.
		corrupt: count;
		## Time spent connected, the current connection included.
		connected: interval;
	};
}
