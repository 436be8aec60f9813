##! Keeps the senders of a PCAP-over-IP source apart: the sender (capture
##! point) becomes part of the connection key, so that the same 5-tuple seen
##! by two senders is two connections, and every log with a ``conn_id``
##! names it in ``id.ctx.pcapovertcp_sender``. Load it in every worker:
##!
##!     @load policy/frameworks/conn_key/pcapovertcp/sender
##!
##! A connect endpoint is named as written in the interface name
##! (``192.0.2.10:57012``, ``tls://tap.example:57012``); a listening
##! source's sender by its IP address, or by the name
##! :zeek:see:`PcapOverTcp::sender_names` gives it. Both are the same in
##! every worker and across a sender's reconnects. Beyond 1024 distinct
##! sender addresses, further ones share the name ``other``. Packets that
##! did not come from this plugin's source (``zeek -r``) have no sender.

module PcapOverTcp;

export {
	## Names for listening senders, by the subnet their address is in (the
	## longest match wins): ``{ [10.1.0.0/16] = "branch-a" }``. A sender
	## in none of them is named by its address. Read once per sender, when
	## its first packet arrives; all workers must agree.
	const sender_names: table[subnet] of string = {} &redef;
}

redef record conn_id_ctx += {
	## The capture point that sent the connection's packets.
	pcapovertcp_sender: string &log &optional;
};

redef ConnKey::factory = ConnKey::CONNKEY_PCAPOVERTCP_SENDER_FIVETUPLE;
