#!/usr/bin/env python3
"""send.py HOST:PORT FILE: one PCAP-over-IP sender for bench/run.py's merge
section. Connects to a receiver that listens, sends FILE's 24-byte pcap
header, prints "ready" and waits for a line on standard input; then sends
the rest of FILE (sendfile), closes its side and waits for the receiver to
close. The pause lets the bench connect every sender before any packet
flows: a merge only waits for the connections it has, so a sender that
connects a few milliseconds before the others would otherwise have its
packets released ahead of theirs."""
import socket
import sys

host, port = sys.argv[1].rsplit(":", 1)
with open(sys.argv[2], "rb") as f, socket.create_connection((host, int(port))) as s:
    s.sendall(f.read(24))
    print("ready", flush=True)
    sys.stdin.readline()
    s.sendfile(f, 24)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
