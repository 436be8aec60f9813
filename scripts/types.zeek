##! Types of the PCAP-over-IP packet source; loaded before its built-in
##! functions, which use them.

module PcapOverTcp;

export {
	## One sender's counters: a connect endpoint (``host:port``), or a
	## listening source's sender, by IP address (every connection from that
	## address together). Senders beyond 1024 addresses are counted
	## together as ``other``.
	type Sender: record {
		## The endpoint, or the sender's IP address.
		address: string;
		## Connections established.
		connects: count;
		## Connections that ended (closed, failed, or corrupt).
		disconnects: count;
		## Bytes received.
		bytes: count;
		## Records (packets) parsed from the stream.
		records: count;
		## Records dropped because the buffer (or this sender's share of
		## it) was full (:zeek:see:`PcapOverTcp::drop_when_full`).
		dropped: count;
		## Records cut off by the end of a connection.
		truncated: count;
		## Connections whose stream was not valid pcap or pcapng.
		corrupt: count;
		## Records older than one already released by the merge
		## (:zeek:see:`PcapOverTcp::merge_window`); delivered all the same.
		late: count;
		## Time spent connected, the current connections included.
		connected: interval;
	};

	type SenderList: vector of Sender;

	## What :zeek:see:`PcapOverTcp::stats` returns: the counters summed
	## over all senders (see :zeek:see:`PcapOverTcp::Sender` for each),
	## and each sender's own.
	type Stats: record {
		connects: count;
		disconnects: count;
		bytes: count;
		records: count;
		dropped: count;
		truncated: count;
		corrupt: count;
		late: count;
		## Summed over connections: with several senders, more than the
		## time elapsed.
		connected: interval;
		## Each sender, in order of first appearance.
		senders: SenderList;
	};
}
