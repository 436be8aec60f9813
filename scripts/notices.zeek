##! Notices of the PCAP-over-IP packet source, raised from its events
##! (declared with its built-in functions; see docs/metrics-notices.md,
##! "Notices and events"). Loaded with the plugin, also under ``zeek -b``: it loads the
##! notice framework, which costs about 0.1 s and 2 MB at start-up.
##!
##! Suppression: the core raises each fact once (one ``feed_lost`` per
##! outage, not per reconnection attempt; one ``sender_refused`` per
##! address every 10 seconds; upstream drops at most once a second per
##! connection), and the notices carry an ``$identifier`` (the endpoint;
##! for senders, the endpoint and the sender) so that the notice framework
##! suppresses repeats for :zeek:see:`PcapOverTcp::notice_suppression`,
##! also across a cluster's workers.

@load base/frameworks/notice

module PcapOverTcp;

export {
	redef enum Notice::Type += {
		## A connect endpoint's stream was lost; ``$sub`` is the endpoint,
		## ``$msg`` says why. One per outage.
		Feed_Lost,
		## A lost stream is back; ``$msg`` says after how long.
		Feed_Restored,
		## A listening source refused a sender: not in
		## :zeek:see:`PcapOverTcp::allowed_senders` (``acl``),
		## :zeek:see:`PcapOverTcp::max_senders` reached (``limit``), or a
		## failed TLS handshake (``tls``); ``$sub`` is the kind.
		Sender_Refused,
		## A sender's capture host reports packets it dropped before they
		## reached the stream (pcapng drop counts); ``$n`` is the
		## sender's total so far.
		Capture_Loss_Upstream,
	};

	## How long a notice of this source suppresses the same notice about
	## the same endpoint (and sender): a feed that flaps, or a sender
	## refused over and over, makes one notice per this interval; the
	## events still come for each. 0 sec suppresses nothing.
	const notice_suppression = 10 min &redef;
}

# When the notice happened: network time, or before the first packet
# (network time still 0, e.g. with allow_network_time_forward=F) the wall
# clock, rather than 1970.
function notice_time(): time
	{
	return network_time() > double_to_time(0) ? network_time() : current_time();
	}

event PcapOverTcp::feed_lost(endpoint: string, reason: string)
	{
	NOTICE([$ts=notice_time(),
	        $note=Feed_Lost,
	        $msg=fmt("PCAP-over-IP feed %s lost: %s", endpoint, reason),
	        $sub=endpoint,
	        $identifier=endpoint,
	        $suppress_for=notice_suppression]);
	}

event PcapOverTcp::feed_restored(endpoint: string, outage: interval)
	{
	NOTICE([$ts=notice_time(),
	        $note=Feed_Restored,
	        $msg=fmt("PCAP-over-IP feed %s restored after %.1f s", endpoint,
	                 interval_to_double(outage)),
	        $sub=endpoint,
	        $identifier=endpoint,
	        $suppress_for=notice_suppression]);
	}

event PcapOverTcp::sender_refused(source: string, sender: string, kind: string, reason: string)
	{
	NOTICE([$ts=notice_time(),
	        $note=Sender_Refused,
	        $msg=fmt("PCAP-over-IP %s refused sender %s: %s", source, sender, reason),
	        $sub=kind,
	        $src=to_addr(sender),
	        $identifier=cat(source, "/", sender, "/", kind),
	        $suppress_for=notice_suppression]);
	}

event PcapOverTcp::capture_loss_upstream(source: string, sender: string, dropped: count, total: count)
	{
	NOTICE([$ts=notice_time(),
	        $note=Capture_Loss_Upstream,
	        $msg=fmt("PCAP-over-IP sender %s of %s: its capture host reports %d packets dropped (%d in all)",
	                 sender, source, dropped, total),
	        $sub=sender,
	        $n=total,
	        $identifier=cat(source, "/", sender),
	        $suppress_for=notice_suppression]);
	}
