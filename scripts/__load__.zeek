@load ./init.zeek
