##! Types of the PCAP-over-IP packet source; loaded before its built-in
##! functions, which use them.

module PcapOverTcp;

export {
	## How a shared stream (``?share=I/N``) assigns packets to workers;
	## see :zeek:see:`PcapOverTcp::share_by`.
	type ShareBy: enum {
		## The sorted pair of outermost IP addresses: both directions,
		## and every fragment, of a connection land on the same worker.
		ADDRESS_PAIR,
		## Addresses, ports and protocol: spreads many connections
		## between two hosts over the workers.
		FIVE_TUPLE,
	};

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
		## Records (packets) parsed from the stream and kept: with
		## ``?share=I/N``, those of this worker's share (the others are
		## ``other_share``).
		records: count;
		## Records dropped because the buffer (or this sender's share of
		## it) was full (:zeek:see:`PcapOverTcp::drop_when_full`).
		dropped: count;
		## Packets the sender's capture host says it dropped before they
		## reached the stream: pcapng Enhanced Packet Blocks'
		## ``epb_dropcount`` and Interface Statistics Blocks'
		## ``isb_ifdrop`` + ``isb_osdrop``, per interface the larger of the
		## two (see docs/metrics-notices.md, "Drops upstream"). Always 0 for a pcap
		## stream, which carries no drop counts.
		upstream_dropped: count;
		## Records cut off by the end of a connection.
		truncated: count;
		## Connections whose stream was not valid pcap or pcapng.
		corrupt: count;
		## Records older than one already released by the merge
		## (:zeek:see:`PcapOverTcp::merge_window`); delivered all the same,
		## and counted for the sender that sent them.
		late: count;
		## Records dated more than :zeek:see:`PcapOverTcp::merge_max_skew`
		## after both this host's clock and the merge's newest packet;
		## dropped, since they would move network time ahead for every
		## sender.
		skewed: count;
		## Records received but never analysed: when Zeek stopped, they
		## were still in the source's buffer, or unread in the sender's
		## socket (read then, without waiting, and counted in ``records``
		## too). Not those ``dropped`` or ``skewed``. 0 until the source
		## closes, as Zeek begins to stop (before ``zeek_done``), with a
		## warning that says how many (see docs/failures.md, "What a
		## stopping Zeek leaves unanalysed"). A record cut off by the close
		## is not counted: the sender counts it as in flight.
		unanalysed: count;
		## How far the sender's newest packet was behind the merge's
		## newest released packet at its last read (packet time). A
		## sender behind for longer than
		## :zeek:see:`PcapOverTcp::merge_max_hold` (wall clock) is not
		## waited for: its packets are ``late``. In a total, the largest of
		## the senders'.
		lag: interval;
		## Connections lost and reconnected (connect endpoints): each
		## outage counts once, however many attempts it took.
		outages: count;
		## Records of other workers' shares (``?share=I/N``), discarded
		## before they reached Zeek (not drops).
		other_share: count;
		## Connections open now.
		open: count;
		## Time the reader waited for buffer space while TCP slowed the
		## sender down (:zeek:see:`PcapOverTcp::buffer_size`); a wait
		## under way counts as it goes, once it has lasted 10 ms.
		backpressure: interval;
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
		upstream_dropped: count;
		truncated: count;
		corrupt: count;
		late: count;
		skewed: count;
		unanalysed: count;
		lag: interval;
		outages: count;
		other_share: count;
		open: count;
		backpressure: interval;
		## Summed over connections: with several senders, more than the
		## time elapsed.
		connected: interval;
		## Each sender, in order of first appearance.
		senders: SenderList;
	};
}
