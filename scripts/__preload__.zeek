@load ./types.zeek
