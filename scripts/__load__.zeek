@load ./init.zeek
@load ./notices.zeek
