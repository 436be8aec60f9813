# For tests/zeek/sender-keys.sh: at each new connection, looks it up by its
# conn_id (ConnKey factory's ConnKeyFromVal) as it is, under a sender name
# no packet came from, and under the other sender's name; prints the counts
# at the end.
global found_self = 0;
global found_unknown = 0;
global found_other = 0;
global other_is_another = 0;
global conns = 0;

event new_connection(c: connection)
	{
	++conns;
	if ( connection_exists(c$id) && lookup_connection(c$id)$uid == c$uid )
		++found_self;
	local id = copy(c$id);
	id$ctx$pcapovertcp_sender = "elsewhere";
	if ( connection_exists(id) )
		++found_unknown;
	id$ctx$pcapovertcp_sender = c$id$ctx$pcapovertcp_sender == "site-a" ? "::1" : "site-a";
	if ( connection_exists(id) )
		{
		++found_other;
		if ( lookup_connection(id)$uid != c$uid )
			++other_is_another;
		}
	}

event zeek_done()
	{
	print fmt("lookups at new_connection: %d connections; found by their conn_id %d; under an unknown sender %d; under the other sender %d, each another connection: %s",
	    conns, found_self, found_unknown, found_other, found_other == other_is_another);
	}
