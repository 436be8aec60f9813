##! Options of the PCAP-over-IP packet source
##! (``-i pcapovertcp::[SCHEME://]HOST:PORT[,...][?share=I[+K]/N]``, SCHEME
##! ``tcp``, ``tcp-listen``, ``tls`` or ``tls-listen``, or, zstd-compressed
##! between this project's own ends (pcapovertcp-serve and the plugin) for
##! thin links, ``tcp+zstd``, ``tcp+zstd-listen``, ``tls+zstd`` or
##! ``tls+zstd-listen``).
##! Each is a ``&redef`` constant, read when the source opens; redefine it in
##! local.zeek, on the command line (``PcapOverTcp::buffer_size=...``), or per
##! zeekctl worker with ``pcapovertcp_<option>=`` in node.cfg.
##! An interval above 365 days counts as 365 days; a negative one as 0.

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

	## How long a source that connects may go, from start-up, without a
	## whole stream header, whatever the server does (refuses, accepts and
	## stays silent, sends half a header); then Zeek stops with one fatal
	## error naming the endpoint (exit status 1). Zeek does not wait for the
	## stream to start: the source opens at once, so zeek_init, the cluster
	## and the metrics endpoint come up meanwhile, and the wait is reported
	## within about a second. 0: no limit (so that zeekctl can start workers
	## before their feed). A listening source is not concerned: senders come
	## and go.
	const open_timeout = 0 sec &redef;

	## When the buffer is full, keep reading the socket and drop whole
	## packets instead of slowing the sender down. Drops are counted in
	## Zeek's packet statistics (stats.log's ``pkts_dropped``,
	## :zeek:see:`get_net_stats`); capture-loss.log estimates loss from TCP
	## gaps and so shows their effect, not their count. For a server that
	## feeds several sensors, where one slow Zeek must not stall the others.
	const drop_when_full = F &redef;

	## Dead-peer detection. After this long without traffic the kernel
	## sends TCP keepalive probes to the server; a server whose host is
	## down, or whose path is cut (NAT or firewall state expired, cable
	## pulled), answers none and the connection fails after
	## :zeek:see:`PcapOverTcp::keepalive_probes` of them, one every
	## :zeek:see:`PcapOverTcp::keepalive_interval` (TCP_USER_TIMEOUT is set
	## to the same bound on Linux). That is an outage like any other: it is
	## reported and, with :zeek:see:`PcapOverTcp::reconnect`, the source
	## reconnects. A server that is alive but has nothing to send answers
	## the probes, so a quiet network never counts as an outage. With the
	## defaults a dead peer is noticed within 10 + 4 * 3 = 22 seconds.
	## 0 sec leaves the system's keepalive settings alone.
	const keepalive_idle = 10 sec &redef;

	## The pause between keepalive probes (whole seconds).
	const keepalive_interval = 3 sec &redef;

	## How many unanswered keepalive probes make the server dead.
	const keepalive_probes = 4 &redef;

	## When no bytes at all arrive for this long, treat it as an outage
	## (report it, and reconnect with :zeek:see:`PcapOverTcp::reconnect`).
	## For servers that should never be quiet, or that hang while their
	## host stays up. 0 (the default) never does: a quiet network is
	## legitimate, and keepalive already notices a dead host.
	const idle_timeout = 0 sec &redef;

	## With several connections (a listen endpoint, or several endpoints),
	## packets are released in timestamp order: one goes when every other
	## connected sender has a later packet queued. A connected sender with
	## nothing queued is waited for while it keeps sending (and while its
	## share of the buffer is held by packets Zeek has not taken yet, or
	## bytes it sent wait unread in its socket); once
	## it has sent nothing for this long (wall clock) it holds the others no
	## longer. A sender that has sent no packet yet is waited for this long
	## from when the others' packets first wait for it (once), not from its
	## header. So an idle sender delays the others by at most this much. A
	## packet older than one already released is still delivered, and
	## counted as ``late`` in :zeek:see:`PcapOverTcp::stats`. 0 waits for no
	## quiet sender: no delay, but a sender that pauses and resumes comes
	## out of order, and Zeek's network time, which never goes backwards,
	## skews its timers.
	const merge_window = 100 msec &redef;

	## With several connections: the longest any packet waits in the merge
	## (wall clock, from the read that brought it), whatever the other
	## senders do; then it is released past whoever it waits for. A sender
	## whose newest packet has been behind the newest released packet for
	## longer than this (wall clock) is not waited for at all: waiting
	## cannot make its packets timely, and they are delivered and counted
	## as ``late`` for it alone. Never less than
	## :zeek:see:`PcapOverTcp::merge_window`.
	const merge_max_hold = 1 sec &redef;

	## With several connections: a packet dated more than this after both
	## this host's clock and the newest packet released is dropped, counted
	## as ``skewed`` for its sender, and reported once per connection with
	## how far ahead it was. Delivered, it would move Zeek's network time
	## (which never goes backwards) ahead for every sender and make all
	## their packets late. 0 disables the check.
	const merge_max_skew = 5 min &redef;

	## Listening: how many admitted senders (TLS handshake and whole
	## stream header received) may be connected at once, over all listen
	## endpoints of the source. When one more completes its header, the
	## sender that has sent no packet for longest is closed in its
	## favour if it has been silent for :zeek:see:`PcapOverTcp::header_timeout`;
	## otherwise the newcomer is closed and reported with its address.
	## Connections not yet admitted have a pool of their own, of
	## max(64, 2 * max_senders), the oldest closed first when it is full.
	const max_senders = 64 &redef;

	## Listening: the networks senders may connect from; empty (the
	## default) allows any. A sender outside is closed at once and reported
	## (at most once per address every 10 seconds).
	const allowed_senders: set[subnet] = {} &redef;

	## Listening: a connection whose TLS handshake and stream header have
	## not both arrived this long after it was accepted is closed and
	## reported (a port scanner, an SSH client, a sender that hangs or
	## trickles), however slowly its bytes come. Also how long an admitted
	## sender must have been silent to be replaced by a newcomer when
	## :zeek:see:`PcapOverTcp::max_senders` are connected. 0 waits for ever
	## (and replaces senders silent for 10 seconds).
	const header_timeout = 10 sec &redef;

	## With ``?share=I/N`` (I counting from 0; ``?share=I+K/N`` is share
	## I+K, for a host's offset K), this worker keeps only the
	## packets whose flow hash falls in share I of N; the reader thread
	## discards the others before they reach Zeek (counted as
	## ``other_share`` in :zeek:see:`PcapOverTcp::stats`, not as drops).
	## ADDRESS_PAIR (the default) hashes the sorted pair of outermost IP
	## addresses, so every packet and fragment of a connection, in both
	## directions, lands on one worker; FIVE_TUPLE adds protocol and ports
	## (see docs/clusters.md for how fragments follow their flow). Packets
	## that are not IP go to share 0. All workers must use the same value.
	const share_by = ADDRESS_PAIR &redef;

	## PCAP-over-TLS: a PEM bundle of the CA certificates that verify the
	## peer. For ``tls://`` endpoints, empty uses the system's roots; for
	## ``tls-listen://`` it enables client certificates (see
	## :zeek:see:`PcapOverTcp::tls_require_client_cert`). Certificate and
	## key files are read when the source opens: to rotate them, restart.
	const tls_ca_file = "" &redef;

	## ``tls://``: the name the server's certificate must be valid for
	## (and the SNI sent); empty uses the endpoint's host.
	const tls_server_name = "" &redef;

	## Our certificate chain (PEM): the server certificate for
	## ``tls-listen://``, the client certificate for ``tls://`` with
	## mutual TLS. Needs :zeek:see:`PcapOverTcp::tls_key_file`.
	const tls_cert_file = "" &redef;

	## The private key of :zeek:see:`PcapOverTcp::tls_cert_file` (PEM:
	## PKCS#8, PKCS#1 or SEC1).
	const tls_key_file = "" &redef;

	## ``tls-listen://`` with a :zeek:see:`PcapOverTcp::tls_ca_file`:
	## senders must present a client certificate signed by it. With F, a
	## sender without one is accepted (one with a bad one is not).
	const tls_require_client_cert = T &redef;

	## ``tls-listen://``: accept only client certificates valid for one of
	## these names (DNS names or IP addresses, as in the certificate's
	## subject alternative names); empty accepts any the CA signed.
	const tls_allowed_names: set[string] = {} &redef;
}
